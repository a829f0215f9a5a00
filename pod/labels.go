// This file owns pod labels.

package pod

// SetLabels adds labels; with override, existing keys are replaced,
// otherwise changing an existing key is a conflict.
func (d *Daemon) SetLabels(ref string, labels map[string]string, override bool) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.findPod(ref)
	if err != nil {
		return "", err
	}
	if p.rec.Labels == nil {
		p.rec.Labels = map[string]string{}
	}
	if !override {
		for k, v := range labels {
			if old, ok := p.rec.Labels[k]; ok && old != v {
				return "", conflict("conflict: label %s already set on pod %s (use override=true)", k, p.rec.ID)
			}
		}
	}
	for k, v := range labels {
		p.rec.Labels[k] = v
	}
	d.savePod(p)
	return p.rec.ID, nil
}
