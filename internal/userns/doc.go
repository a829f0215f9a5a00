// Package userns owns user namespaces for containers on the host (the
// local driver): the id mapping (Map), a namespace with it that outlives
// its holder process (New), and idmapped copies of mount trees through it
// (mount_setattr(2) MOUNT_ATTR_IDMAP), so that files keep their own ids on
// disk while a container's root is an unprivileged host uid.
package userns
