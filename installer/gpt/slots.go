package gpt

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/offpeak/offpeak/installer"
)

// Sentinel errors of the A/B logic.
var (
	// ErrNoSlotPair: the disk has no USR-A and USR-B partitions of the usr type.
	ErrNoSlotPair = errors.New("no USR-A/USR-B partition pair")
	// ErrBootedUnknown: the booted slot could not be determined.
	ErrBootedUnknown = errors.New("booted slot unknown")
	// ErrBootedNotGood: the booted slot was never marked good, so the
	// passive slot may be the only working fallback; installing over it
	// needs Force.
	ErrBootedNotGood = errors.New("booted slot not marked good")
	// ErrNoRollbackTarget: the other slot is not both verified and marked
	// good. It is installer.ErrNoRollbackTarget.
	ErrNoRollbackTarget = installer.ErrNoRollbackTarget
)

// Labels of the Flatcar A/B pair.
const (
	LabelA = "USR-A"
	LabelB = "USR-B"
)

// DefaultCmdline is where the booted /usr is read from when not configured.
const DefaultCmdline = "/proc/cmdline"

// DefaultRecordDir keeps the outcome of the last install into each slot
// (see InstallRecords).
const DefaultRecordDir = "/var/lib/offpeak/install"

// Target names the disk and how to find the booted slot.
type Target struct {
	Disk string
	// Booted is the booted slot's label (USR-A, USR-B) or PARTUUID, also
	// accepted as PARTLABEL=… / PARTUUID=…. Empty reads CmdlinePath.
	Booted string
	// CmdlinePath is the kernel command line file; "" is /proc/cmdline.
	CmdlinePath string
	// RecordDir keeps one InstallRecord per slot, so that status and
	// rollback can tell why a slot is unbootable; "" keeps none.
	RecordDir string
}

// Slot is one side of the A/B pair as shown to users.
type Slot struct {
	Index      int    `json:"index"`
	Label      string `json:"label"`
	PARTUUID   string `json:"partuuid"`
	Priority   int    `json:"priority"`
	Tries      int    `json:"tries"`
	Successful bool   `json:"successful"`
	FirstLBA   uint64 `json:"first_lba"`
	LastLBA    uint64 `json:"last_lba"`
	SizeBytes  int64  `json:"size_bytes"`
	// Unbootable: gptprio will not boot the slot (priority 0, or no tries
	// left and never marked good).
	Unbootable bool `json:"unbootable"`
}

func slotOf(p Partition, sectorSize int) Slot {
	return Slot{
		Index: p.Index, Label: p.Name, PARTUUID: p.ID.String(),
		Priority: p.Priority(), Tries: p.Tries(), Successful: p.Successful(),
		FirstLBA: p.FirstLBA, LastLBA: p.LastLBA,
		SizeBytes:  int64(p.Sectors()) * int64(sectorSize),
		Unbootable: !p.Bootable(),
	}
}

func (s Slot) String() string {
	return fmt.Sprintf("%s (partition %d) priority %d tries %d successful %d", s.Label, s.Index, s.Priority, s.Tries, b2i(s.Successful))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// State is the A/B pair of a disk.
type State struct {
	Disk    string `json:"disk"`
	Booted  Slot   `json:"booted"`
	Passive Slot   `json:"passive"`
	// Staged: the passive slot will be tried on the next boot (priority
	// above the booted slot, tries left, not yet marked good).
	Staged bool `json:"staged"`
	// Next is the label gptprio boots next; empty when nothing is bootable.
	Next     string   `json:"next"`
	Problems []string `json:"problems,omitempty"`
	// PassiveInstall is the record of the last install into the passive
	// slot, when Target.RecordDir keeps one.
	PassiveInstall *InstallRecord `json:"passive_install,omitempty"`
	// PassiveStatus says in words whether the passive slot can boot or be
	// rolled back to, and why not.
	PassiveStatus string `json:"passive_status"`
}

// pair is the resolved A/B pair of a table.
type pair struct {
	booted, passive Partition
}

func findPair(t *Table) (a, b Partition, err error) {
	var foundA, foundB bool
	for _, p := range t.Partitions() {
		if p.Type != USRType {
			continue
		}
		switch p.Name {
		case LabelA:
			if foundA {
				return a, b, fmt.Errorf("%w: two partitions labelled %s", ErrNoSlotPair, LabelA)
			}
			a, foundA = p, true
		case LabelB:
			if foundB {
				return a, b, fmt.Errorf("%w: two partitions labelled %s", ErrNoSlotPair, LabelB)
			}
			b, foundB = p, true
		}
	}
	if !foundA || !foundB {
		return a, b, fmt.Errorf("%w: need partitions labelled %s and %s with type %s", ErrNoSlotPair, LabelA, LabelB, USRType)
	}
	return a, b, nil
}

// resolve finds the pair and which side is booted.
func resolve(t *Table, tg Target) (pair, error) {
	a, b, err := findPair(t)
	if err != nil {
		return pair{}, err
	}
	sel, src := tg.Booted, "configured booted slot"
	if sel == "" {
		path := tg.CmdlinePath
		if path == "" {
			path = DefaultCmdline
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return pair{}, fmt.Errorf("%w: no booted slot configured and %w", ErrBootedUnknown, err)
		}
		sel = UsrFromCmdline(string(data))
		if sel == "" {
			return pair{}, fmt.Errorf("%w: no booted slot configured and %s names no mount.usr=, verity.usr= or usr= PARTUUID/PARTLABEL", ErrBootedUnknown, path)
		}
		src = path
	}
	switch {
	case matches(a, sel):
		return pair{booted: a, passive: b}, nil
	case matches(b, sel):
		return pair{booted: b, passive: a}, nil
	}
	return pair{}, fmt.Errorf("%w: %s %q is neither %s (%s) nor %s (%s)", ErrBootedUnknown, src, sel, LabelA, a.ID, LabelB, b.ID)
}

func matches(p Partition, sel string) bool {
	if v, ok := strings.CutPrefix(sel, "PARTLABEL="); ok {
		return p.Name == v
	}
	v, explicitUUID := strings.CutPrefix(sel, "PARTUUID=")
	if g, err := ParseGUID(v); err == nil {
		return g == p.ID
	}
	return !explicitUUID && p.Name == sel
}

// UsrFromCmdline returns the /usr partition a kernel command line names, as
// "PARTUUID=…" or "PARTLABEL=…", or "". It reads mount.usr=, verity.usr=
// (Flatcar with dm-verity mounts /dev/mapper/usr and names the partition
// there) and usr=; the last one naming a partition wins, as later kernel
// parameters override earlier ones.
func UsrFromCmdline(cmdline string) string {
	out := ""
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok || (k != "mount.usr" && k != "verity.usr" && k != "usr") {
			continue
		}
		v = strings.Trim(v, `"`)
		if strings.HasPrefix(v, "PARTUUID=") || strings.HasPrefix(v, "PARTLABEL=") {
			out = v
		}
	}
	return out
}

func (t *Table) stateOf(disk string, p pair) State {
	st := State{
		Disk:     disk,
		Booted:   slotOf(p.booted, t.SectorSize),
		Passive:  slotOf(p.passive, t.SectorSize),
		Problems: t.Problems(),
	}
	st.Staged = staged(p.booted, p.passive)
	if n, err := Select(t, USRType); err == nil {
		st.Next = n.Name
	}
	return st
}

// withRecord adds the passive slot's install record and the words for
// its state. An unreadable record is a problem, not an error: status must
// still show the disk.
func withRecord(st State, dir string) State {
	rec, err := ReadInstallRecord(dir, st.Passive.PARTUUID)
	if err != nil {
		st.Problems = append(st.Problems, err.Error())
	}
	st.PassiveInstall = rec
	st.PassiveStatus = passiveStatus(st.Passive, st.Staged, rec, err)
	return st
}

// passiveStatus describes the passive slot for status output.
func passiveStatus(s Slot, isStaged bool, rec *InstallRecord, recErr error) string {
	unverified := recErr != nil || (rec != nil && rec.Result != InstallVerified)
	if isStaged && !unverified {
		return s.Label + " is staged: a verified install, tried on the next boot"
	}
	if why := rollbackRefusal(s, rec, recErr); why != "" {
		if s.Unbootable {
			return s.Label + " is unbootable: " + why
		}
		return s.Label + " is not a rollback target: " + why
	}
	return s.Label + " is good: it booted successfully before and is the rollback target"
}

// rollbackRefusal says why the passive slot must not be made to boot, or
// "" when it may: only a slot that is both verified (no record of an
// install into it that did not verify) and successful (marked good after
// a boot) is a fallback.
func rollbackRefusal(s Slot, rec *InstallRecord, recErr error) string {
	switch {
	case recErr != nil:
		return fmt.Sprintf("the record of its last install is unreadable (%v)", recErr)
	case rec != nil && rec.Result != InstallVerified:
		return rec.Why() + "; only a verified install makes it bootable again"
	case !s.Successful && s.Priority == 0 && s.Tries == 0:
		return "it is marked unbootable (priority 0, tries 0, successful 0) and holds no verified install"
	case !s.Successful:
		return "it was never marked good"
	}
	return ""
}

func staged(booted, passive Partition) bool {
	return passive.Priority() > booted.Priority() && passive.Tries() > 0 && !passive.Successful()
}

// nextPriorities returns the priorities that put the passive slot above a
// booted slot at priority cur: cur+1, or at the top of the range 15 for the
// passive and 14 for the booted (which stays bootable as the fallback).
func nextPriorities(cur int) (passive, booted int) {
	if cur >= maxPrioOrTries {
		return maxPrioOrTries, maxPrioOrTries - 1
	}
	return cur + 1, cur
}
