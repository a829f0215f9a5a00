// Package network owns the pods' networks: a network namespace per pod
// (pinned under the daemon's state, entered only on throw-away OS
// threads), its interface from CNI (libcni with the plugins of the
// configured network: by default the original hyperd's hyper0 bridge on
// 192.168.123.0/24), the pod's requested address, MAC, MTU and gateway,
// teardown with the configuration cached at ADD (so nothing leaks after
// a conflist edit, a crash or kill -9), and Driver, which wraps any
// sandbox driver so that every sandbox it creates lives in its pod's
// network and releases it when it ends.
package network
