package gpt

import (
	"context"
	"errors"
	"fmt"
)

// ErrNoBootable: no partition of the type is bootable under gptprio rules.
var ErrNoBootable = errors.New("no bootable partition")

// Select returns the partition GRUB's gptprio would boot, without changing
// anything. Rules: among the partitions of type typ, those with priority > 0
// and (tries > 0 or successful) are candidates; the highest priority wins;
// on a tie the lower partition index wins.
func Select(t *Table, typ GUID) (Partition, error) {
	var best Partition
	found := false
	for _, p := range t.Partitions() {
		if p.Type != typ || !p.Bootable() {
			continue
		}
		// Table order is index order, so a strict comparison keeps the
		// lower index on a tie.
		if !found || p.Priority() > best.Priority() {
			best, found = p, true
		}
	}
	if !found {
		return Partition{}, fmt.Errorf("%w of type %s", ErrNoBootable, typ)
	}
	return best, nil
}

// BootNext is gptprio's boot-time step on the table in memory: Select, and
// when the chosen partition has not booted successfully yet, spend one of
// its tries. It reports whether the table changed (and must be written).
func (t *Table) BootNext(typ GUID) (Partition, bool, error) {
	p, err := Select(t, typ)
	if err != nil {
		return Partition{}, false, err
	}
	if p.Successful() || p.Tries() == 0 {
		return p, false, nil
	}
	if err := t.SetPrio(p.Index, p.Priority(), p.Tries()-1, false); err != nil {
		return Partition{}, false, err
	}
	p, err = t.Partition(p.Index)
	return p, true, err
}

// Boot simulates the boot loader on a disk or image: it picks the /usr
// partition to boot as gptprio does and writes the spent try back. It
// returns the partition booted, which callers pass on as Target.Booted.
func Boot(ctx context.Context, disk string) (Partition, error) {
	d, err := OpenDisk(ctx, disk, true)
	if err != nil {
		return Partition{}, err
	}
	defer d.Close()
	t, err := d.ReadTable()
	if err != nil {
		return Partition{}, err
	}
	p, changed, err := t.BootNext(USRType)
	if err != nil {
		return Partition{}, fmt.Errorf("%s: %w", disk, err)
	}
	if changed {
		if err := d.WriteTable(t); err != nil {
			return Partition{}, err
		}
	}
	return p, nil
}
