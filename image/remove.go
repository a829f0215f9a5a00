package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
)

// Remove untags and deletes images as `docker rmi` does. ref may be a reference
// (only that reference is removed; the image is deleted when it was the last one) or
// an id (the image is deleted; with several repository names this needs force).
// An image used by a container (inUse) is not deleted without force (ErrConflict).
// Untagged parent images left without children are deleted too unless noprune.
// Blobs no remaining image references are removed, with the image's cached rootfs
// directory and disk image.
func (s *Store) Remove(ref string, force, noprune bool, inUse func(id string) bool) ([]RemoveItem, error) {
	if inUse == nil {
		inUse = func(string) bool { return false }
	}
	var items []RemoveItem
	var deleted []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		refs := refsOf(tx, id)
		byRef := false
		c, cerr := canonical(ref)
		if cerr == nil {
			for _, r := range refs {
				if r == c {
					byRef = true
				}
			}
		}
		refB := tx.Bucket(bRefs)
		if byRef {
			tags := 0
			for _, r := range refs {
				if !strings.Contains(r, "@") {
					tags++
				}
			}
			// Removing one of several names only untags.
			if tags > 1 || (strings.Contains(c, "@") && tags > 0) {
				if err := refB.Delete([]byte(c)); err != nil {
					return err
				}
				items = append(items, RemoveItem{Untagged: familiar(c)})
				return nil
			}
		} else if !force {
			tags := 0
			for _, r := range refs {
				if !strings.Contains(r, "@") {
					tags++
				}
			}
			if tags > 1 {
				return fmt.Errorf("unable to delete %s (must be forced) - image is referenced in multiple repositories: %w", shortID(id), ErrConflict)
			}
		}
		if inUse(id) && !force {
			return fmt.Errorf("unable to delete %s (must be forced) - image is being used by a container: %w", shortID(id), ErrConflict)
		}
		if hasChildren(tx, id) && !force {
			return fmt.Errorf("unable to delete %s: image has dependent child images: %w", shortID(id), ErrConflict)
		}
		for _, r := range refs {
			refB.Delete([]byte(r))
			items = append(items, RemoveItem{Untagged: familiar(r)})
		}
		// Delete the image, then (unless noprune) walk up through parents that are
		// now untagged, childless and unused.
		for cur := id; cur != ""; {
			rec, err := getRec(tx, cur)
			if err != nil {
				break
			}
			if cur != id && (len(refsOf(tx, cur)) > 0 || hasChildren(tx, cur) || inUse(cur)) {
				break
			}
			if err := tx.Bucket(bImages).Delete([]byte(cur)); err != nil {
				return err
			}
			items = append(items, RemoveItem{Deleted: cur})
			deleted = append(deleted, cur)
			if noprune {
				break
			}
			cur = rec.Parent
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range deleted {
		os.RemoveAll(filepath.Join(s.root, "rootfs", hexOf(id)))
		os.Remove(filepath.Join(s.root, "disk", hexOf(id)+".ext4"))
	}
	if len(deleted) > 0 {
		if err := s.GC(); err != nil {
			return items, fmt.Errorf("removing unreferenced blobs: %w", err)
		}
	}
	return items, nil
}

func hasChildren(tx *bolt.Tx, id string) bool {
	found := false
	tx.Bucket(bImages).ForEach(func(k, v []byte) error {
		if strings.Contains(string(v), `"parent":"`+id+`"`) {
			found = true
		}
		return nil
	})
	return found
}

// GC removes blobs that no image references (and that no in-flight operation holds).
func (s *Store) GC() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := map[string]bool{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		err := tx.Bucket(bImages).ForEach(func(k, v []byte) error {
			r, err := getRec(tx, string(k))
			if err != nil {
				return err
			}
			live[hexOf(r.ID)] = true
			live[hexOf(r.Manifest)] = true
			for _, l := range r.Layers {
				live[hexOf(l.Digest)] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		for d := range s.pending {
			live[hexOf(d)] = true
		}
		lb := tx.Bucket(bLayers)
		var dead [][]byte
		lb.ForEach(func(k, v []byte) error {
			if !live[hexOf(string(k))] {
				dead = append(dead, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range dead {
			lb.Delete(k)
		}
		// Build cache entries of deleted images.
		cb, ib := tx.Bucket(bCache), tx.Bucket(bImages)
		var stale [][]byte
		cb.ForEach(func(k, v []byte) error {
			if ib.Get(v) == nil {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range stale {
			cb.Delete(k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	dir := filepath.Join(s.root, "blobs", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !live[e.Name()] {
			if _, err := v1.NewHash("sha256:" + e.Name()); err != nil {
				continue // not ours
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return nil
}
