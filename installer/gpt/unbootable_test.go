package gpt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// goodFallbackImage is the operator's starting point of the failed-install
// reports: USR-A booted and good at priority 2, USR-B the known-good
// fallback at priority 1.
func goodFallbackImage(t *testing.T) string {
	t.Helper()
	img := newImage(t)
	cgptAdd(t, img, idxA, 2, 0, 1)
	cgptAdd(t, img, idxB, 1, 0, 1)
	return img
}

// blockingReader hands out data, then cancels the install's context and
// blocks like a terminal or a pipe whose writer stays silent, until the
// test ends.
type blockingReader struct {
	data    []byte
	cancel  context.CancelFunc
	release chan struct{}
	once    sync.Once
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if len(b.data) > 0 {
		n := copy(p, b.data)
		b.data = b.data[n:]
		return n, nil
	}
	b.once.Do(b.cancel)
	<-b.release
	return 0, io.EOF
}

// TestFailedInstallLeavesSlotUnbootable: whatever makes an install fail
// once it has begun writing, the passive slot ends up unbootable (priority
// 0, tries 0, successful 0, as `cgpt add -i 4 -P 0 -T 0 -S 0` writes it),
// rollback to it is refused with the reason, and a good install afterwards
// makes it bootable as before.
func TestFailedInstallLeavesSlotUnbootable(t *testing.T) {
	k := newKeys(t)
	data := imageData(2<<20+77, 21)
	sum := sha(data)
	tests := []struct {
		name string
		// opts returns the failing install; partial is how many bytes of
		// data the partition must hold afterwards (-1: not compared).
		opts    func(t *testing.T, cancel context.CancelFunc) Options
		want    error
		partial int
		reason  string
	}{
		{name: "wrong checksum", want: ErrChecksumMismatch, partial: len(data), reason: "checksum mismatch",
			opts: func(t *testing.T, _ context.CancelFunc) Options {
				return Options{ImagePath: writeImageFile(t, data), SHA256: sha([]byte("another image"))}
			}},
		{name: "bad signature", want: ErrBadSignature, partial: len(data), reason: "signature invalid",
			opts: func(t *testing.T, _ context.CancelFunc) Options {
				return Options{ImagePath: writeImageFile(t, data), Signature: ed25519.Sign(k.other, SignedMessage(sum)), PublicKey: k.pub}
			}},
		{name: "truncated stream", want: ErrTruncated, partial: 1 << 20, reason: "truncated",
			opts: func(t *testing.T, _ context.CancelFunc) Options {
				return Options{Image: &failingReader{bytes.NewReader(data[:1<<20]), io.ErrUnexpectedEOF}, SHA256: sum}
			}},
		{name: "cancelled while the source blocks", want: context.Canceled, partial: -1, reason: "context canceled",
			opts: func(t *testing.T, cancel context.CancelFunc) Options {
				r := &blockingReader{data: data[:1<<20], cancel: cancel, release: make(chan struct{})}
				t.Cleanup(func() { close(r.release) })
				return Options{Image: r, SHA256: sum}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := goodFallbackImage(t)
			img, want := copyFile(t, base), copyFile(t, base)
			cgptAdd(t, want, idxB, 0, 0, 0)
			records := t.TempDir()
			tg := Target{Disk: img, Booted: LabelA, RecordDir: records}

			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			o := tc.opts(t, cancel)
			o.Target = tg
			done := make(chan error, 1)
			go func() { _, err := Install(ctx, o); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute): // hang guard only
				t.Fatal("Install did not return after its context was cancelled while the image source blocked")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Install = %v, want %v", err, tc.want)
			}

			wantCgpt(t, img, idxB, 0, 0, 0)
			wantCgpt(t, img, idxA, 2, 0, 1)
			if !bytes.Equal(tableArea(t, img), tableArea(t, want)) {
				t.Error("GPT bytes differ from what cgpt add -i 4 -P 0 -T 0 -S 0 writes")
			}
			if tc.partial >= 0 {
				ddInto(t, want, idxB, data[:tc.partial])
				sameFile(t, img, want)
			}
			sgdiskClean(t, img)

			st, err := Inspect(ctxT(t), tg)
			if err != nil {
				t.Fatal(err)
			}
			if !st.Passive.Unbootable || st.PassiveInstall == nil || st.PassiveInstall.Result != InstallFailed ||
				!strings.Contains(st.PassiveInstall.Error, tc.reason) || !strings.Contains(st.PassiveStatus, tc.reason) {
				t.Errorf("install status does not say why %s is unbootable: %+v %+v %q", LabelB, st.Passive, st.PassiveInstall, st.PassiveStatus)
			}

			before := readFile(t, img)
			_, err = Rollback(ctxT(t), tg)
			if !errors.Is(err, ErrNoRollbackTarget) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Rollback = %v, want ErrNoRollbackTarget naming %q", err, tc.reason)
			}
			if !bytes.Equal(readFile(t, img), before) {
				t.Error("refused rollback changed the disk")
			}

			// A good install makes the slot bootable again, as today.
			good := imageData(3<<20+5, 22)
			res, err := Install(ctxT(t), Options{Target: tg, Image: bytes.NewReader(good), SHA256: sha(good)})
			if err != nil {
				t.Fatalf("good install after the failure: %v", err)
			}
			// The good image is longer than anything the failure wrote.
			ref := copyFile(t, base)
			ddInto(t, ref, idxB, good)
			cgptAdd(t, ref, idxB, 3, 1, 0)
			sameFile(t, img, ref)
			wantCgpt(t, img, idxB, 3, 1, 0)
			if !res.Staged || res.Next != LabelB || res.Passive.Unbootable {
				t.Errorf("after the good install: staged %v next %q unbootable %v", res.Staged, res.Next, res.Passive.Unbootable)
			}
			if rec, err := ReadInstallRecord(records, res.Passive.PARTUUID); err != nil || rec == nil || rec.Result != InstallVerified || rec.Error != "" {
				t.Errorf("record after the good install: %+v %v", rec, err)
			}
		})
	}
}

// TestRollbackRefusesUnverifiedSlot: a slot marked unbootable, or one whose
// last install did not verify, is no rollback target even if someone set
// its successful bit by hand; a slot that verified and booted good is.
func TestRollbackRefusesUnverifiedSlot(t *testing.T) {
	t.Run("marked unbootable without a record", func(t *testing.T) {
		img := goodFallbackImage(t)
		cgptAdd(t, img, idxB, 0, 0, 0)
		_, err := Rollback(ctxT(t), Target{Disk: img, Booted: LabelA, RecordDir: t.TempDir()})
		if !errors.Is(err, ErrNoRollbackTarget) || !strings.Contains(err.Error(), "unbootable") {
			t.Fatalf("Rollback = %v", err)
		}
	})
	t.Run("record says the install failed", func(t *testing.T) {
		img, records := goodFallbackImage(t), t.TempDir()
		tg := Target{Disk: img, Booted: LabelA, RecordDir: records}
		data := imageData(1<<20, 23)
		if _, err := Install(ctxT(t), Options{Target: tg, Image: bytes.NewReader(data), SHA256: sha([]byte("x"))}); !errors.Is(err, ErrChecksumMismatch) {
			t.Fatal(err)
		}
		// Somebody makes the slot look good again behind offpeak's back.
		cgptAdd(t, img, idxB, 1, 0, 1)
		_, err := Rollback(ctxT(t), tg)
		if !errors.Is(err, ErrNoRollbackTarget) || !strings.Contains(err.Error(), "checksum mismatch") {
			t.Fatalf("Rollback = %v", err)
		}
	})
	t.Run("verified and good", func(t *testing.T) {
		img, records := goodFallbackImage(t), t.TempDir()
		st, err := Rollback(ctxT(t), Target{Disk: img, Booted: LabelA, RecordDir: records})
		if err != nil || st.Next != LabelB {
			t.Fatalf("Rollback = %+v, %v", st, err)
		}
	})
}
