package gpt

import (
	"context"
	"fmt"
)

// Inspect reads the A/B state of a disk without changing it.
func Inspect(ctx context.Context, tg Target) (State, error) {
	d, err := OpenDisk(ctx, tg.Disk, false)
	if err != nil {
		return State{}, err
	}
	defer d.Close()
	t, err := d.ReadTable()
	if err != nil {
		return State{}, err
	}
	p, err := resolve(t, tg)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", tg.Disk, err)
	}
	return withRecord(t.stateOf(tg.Disk, p), tg.RecordDir), nil
}

// update opens the disk for writing, applies change to its table and
// writes the table back when change reports a modification.
func update(ctx context.Context, tg Target, change func(*Table, pair) (bool, error)) (State, error) {
	d, err := OpenDisk(ctx, tg.Disk, true)
	if err != nil {
		return State{}, err
	}
	defer d.Close()
	t, err := d.ReadTable()
	if err != nil {
		return State{}, err
	}
	p, err := resolve(t, tg)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", tg.Disk, err)
	}
	changed, err := change(t, p)
	if err != nil {
		return State{}, fmt.Errorf("%s: %w", tg.Disk, err)
	}
	if changed {
		if err := ctx.Err(); err != nil {
			return State{}, err
		}
		if err := d.WriteTable(t); err != nil {
			return State{}, err
		}
	}
	st, err := reread(t, tg.Disk, p)
	if err != nil {
		return State{}, err
	}
	return withRecord(st, tg.RecordDir), nil
}

// reread refreshes the pair's partitions from the (possibly changed) table.
func reread(t *Table, disk string, p pair) (State, error) {
	var err error
	if p.booted, err = t.Partition(p.booted.Index); err != nil {
		return State{}, err
	}
	if p.passive, err = t.Partition(p.passive.Index); err != nil {
		return State{}, err
	}
	return t.stateOf(disk, p), nil
}

// MarkGood records that the booted slot works: successful=1, tries=0, as
// `cgpt add -i N -S 1 -T 0`. The priority stays.
func MarkGood(ctx context.Context, tg Target) (State, error) {
	return update(ctx, tg, func(t *Table, p pair) (bool, error) {
		b := p.booted
		if b.Successful() && b.Tries() == 0 {
			return false, nil
		}
		return true, t.SetPrio(b.Index, b.Priority(), 0, true)
	})
}

// Rollback makes the other slot boot next: its priority goes above the
// booted slot's (see nextPriorities); its tries and successful bit stay. It
// refuses (ErrNoRollbackTarget, saying why) unless the other slot is both
// verified and successful: marked good after a boot, and with no record in
// tg.RecordDir of a later install into it that did not verify, since
// booting it could land on a half-written or failed update.
func Rollback(ctx context.Context, tg Target) (State, error) {
	return update(ctx, tg, func(t *Table, p pair) (bool, error) {
		o, b := p.passive, p.booted
		rec, recErr := ReadInstallRecord(tg.RecordDir, o.ID.String())
		if why := rollbackRefusal(slotOf(o, t.SectorSize), rec, recErr); why != "" {
			return false, fmt.Errorf("%w: %s is not both verified and marked good: %s", ErrNoRollbackTarget, o.Name, why)
		}
		if o.Priority() > b.Priority() {
			return false, nil
		}
		op, bp := nextPriorities(b.Priority())
		if err := t.SetPrio(o.Index, op, o.Tries(), true); err != nil {
			return false, err
		}
		if bp != b.Priority() {
			if err := t.SetPrio(b.Index, bp, b.Tries(), b.Successful()); err != nil {
				return false, err
			}
		}
		return true, nil
	})
}

// Repair rewrites a disk's GPT when one copy is damaged or stale, from the
// other copy, and returns what was wrong (nil when nothing was). It needs no
// A/B pair and changes no partition.
func Repair(ctx context.Context, disk string) ([]string, error) {
	d, err := OpenDisk(ctx, disk, true)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	t, err := d.ReadTable()
	if err != nil {
		return nil, err
	}
	if t.PrimaryValid() && t.BackupValid() {
		return nil, nil
	}
	problems := t.Problems()
	if err := d.WriteTable(t); err != nil {
		return problems, err
	}
	return problems, nil
}
