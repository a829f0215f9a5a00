// This file owns the default pod network: the original hyperd's hyper0
// bridge on 192.168.123.0/24, written as a CNI conflist on first start.
package network

import (
	"encoding/json"
)

// The default network, as the original hyperd's: bridge hyper0, subnet
// 192.168.123.0/24, gateway .1 on the bridge, masqueraded to the outside.
const (
	DefaultConfFile = "10-hyperd.conflist"
	DefaultName     = "hyperd"
	DefaultBridge   = "hyper0"
	DefaultSubnet   = "192.168.123.0/24"
	DefaultGateway  = "192.168.123.1"
)

// DefaultConfList is the default network's conflist: bridge (gateway,
// IP masquerade, hairpin for a pod reaching itself through a port
// mapping) with host-local IPAM keeping its leases in dataDir, then
// firewall (lets the pods' traffic through the host's FORWARD chain)
// and portmap (CNI's hostPort mappings for runtimes that use them; hyperd
// maps ports through its agent tunnel, see the README).
func DefaultConfList(dataDir string) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       DefaultName,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": DefaultBridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": DefaultSubnet, "gateway": DefaultGateway}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": dataDir,
				},
			},
			map[string]any{"type": "firewall"},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return append(b, '\n')
}
