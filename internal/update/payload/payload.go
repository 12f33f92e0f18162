// Package payload reads Flatcar's update payloads (update_engine's "CrAU"
// format, version 1) as a stream and turns a full payload into the raw
// partition image, in one pass and without a temporary copy, so that the
// image can be handed to the installer as an io.Reader.
//
// A payload is
//
//	"CrAU" | version (u64 BE, 1) | manifest size (u64 BE) | manifest
//	| data blobs | signature blob
//
// where the manifest is a protobuf DeltaArchiveManifest listing install
// operations, each writing its blob (raw, bzip2 or xz) to block extents of
// the partition, and the signature blob is a protobuf Signatures message:
// RSA PKCS#1 v1.5 signatures over the SHA-256 of everything before it
// (header, manifest and data blobs), as update_engine signs with
// `openssl pkeyutl -sign -pkeyopt digest:sha256`.
//
// Only full payloads are installed: REPLACE, REPLACE_BZ and REPLACE_XZ
// operations whose extents follow one another from block 0. Delta
// operations (MOVE, BSDIFF, SOURCE_COPY, ...) and payloads built against a
// source partition are refused before any byte is produced.
//
// The image bytes are produced before the payload is fully read, so they
// are not verified when handed out: the signature, the operations' hashes
// and the new partition's size and SHA-256 are all checked by the time
// Read returns io.EOF, and any failure is the error of the last Read. A
// consumer must treat every Read error as a failed install.
package payload

import (
	"bytes"
	"compress/bzip2"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// Errors callers branch on.
var (
	// ErrNotPayload: the stream does not start with "CrAU".
	ErrNotPayload = errors.New("not an update payload")
	// ErrUnsupportedVersion: a payload format other than version 1.
	ErrUnsupportedVersion = errors.New("unsupported payload version")
	// ErrDeltaUnsupported: a delta payload (operations reading the old
	// partition, or a payload built against one).
	ErrDeltaUnsupported = errors.New("delta payloads are not supported")
	// ErrUnsupportedOperation: an operation type a full payload does not
	// use here (ZERO, DISCARD, unknown), or extents that cannot be
	// written as one stream.
	ErrUnsupportedOperation = errors.New("unsupported payload operation")
	// ErrCorrupt: the payload is malformed or its contents do not match
	// the hashes it declares.
	ErrCorrupt = errors.New("corrupt payload")
	// ErrTruncated: the stream ended before the payload did.
	ErrTruncated = errors.New("payload truncated")
	// ErrBadSignature: no signature, or none verifies with the configured
	// keys.
	ErrBadSignature = errors.New("payload signature invalid")
	// ErrNoKey: Options.PublicKeys is empty; payloads are never installed
	// unsigned.
	ErrNoKey = errors.New("no payload public key configured")
)

// Limits on what is held in memory.
const (
	DefaultMaxManifestSize  = 16 << 20
	DefaultMaxOperationData = 64 << 20
	maxSignaturesSize       = 64 << 10
)

// Options configure a Reader.
type Options struct {
	// PublicKeys verify the signature; one must match. Required.
	PublicKeys []*rsa.PublicKey
	// MaxManifestSize bounds the manifest; DefaultMaxManifestSize when 0.
	MaxManifestSize int64
	// MaxOperationData bounds one operation's data blob, which is held
	// in memory to check its hash before it is decompressed (as
	// update_engine does); DefaultMaxOperationData when 0. Flatcar's
	// blobs are at most 1 MiB.
	MaxOperationData int64
	// Procedure, when set, is asked where a procedure's file (the kernel,
	// a PCR policy) goes; nil or a nil writer discards it. Either way its
	// data is read and checked.
	Procedure func(ProcedureInfo) (io.Writer, error)
}

// ProcedureInfo describes a file a payload carries next to the partition.
type ProcedureInfo struct {
	Type ProcedureType
	// Size and SHA256 of the new file, when the payload gives them.
	Size   int64
	SHA256 []byte
}

// Reader produces the new partition image of a full payload.
type Reader struct {
	src  *source
	opts Options
	hdr  Header
	m    *Manifest

	size int64 // new partition size
	next int   // index of the next partition operation
	tgt  *target
	cur  io.Reader // output of the current operation
	err  error     // sticky; io.EOF once verified
	sigs []Signature
}

// Open reads and checks the header and manifest: format version, a
// signature slot, a new partition size and SHA-256, and that every
// operation is one this reader can apply as a stream. Nothing of the image
// has been produced when it fails.
func Open(r io.Reader, opts Options) (*Reader, error) {
	if len(opts.PublicKeys) == 0 {
		return nil, ErrNoKey
	}
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = DefaultMaxManifestSize
	}
	if opts.MaxOperationData <= 0 {
		opts.MaxOperationData = DefaultMaxOperationData
	}
	src := &source{r: r, h: sha256.New()}
	hb := make([]byte, HeaderSize)
	if n, err := io.ReadFull(src, hb); err != nil {
		if k := min(n, len(Magic)); string(hb[:k]) != Magic[:k] {
			return nil, fmt.Errorf("%w: no %q magic", ErrNotPayload, Magic)
		}
		return nil, readErr("header", err)
	}
	hdr, err := ParseHeader(hb)
	if err != nil {
		return nil, err
	}
	if hdr.ManifestSize == 0 || hdr.ManifestSize > uint64(opts.MaxManifestSize) {
		return nil, fmt.Errorf("%w: manifest of %d bytes (limit %d)", ErrCorrupt, hdr.ManifestSize, opts.MaxManifestSize)
	}
	mb := make([]byte, hdr.ManifestSize)
	if _, err := io.ReadFull(src, mb); err != nil {
		return nil, readErr("manifest", err)
	}
	m, err := ParseManifest(mb)
	if err != nil {
		return nil, err
	}
	if err := check(m, opts); err != nil {
		return nil, err
	}
	pr := &Reader{src: src, opts: opts, hdr: hdr, m: m, size: int64(m.NewPartitionInfo.Size)}
	pr.tgt = newTarget("partition", m.BlockSize, m.NewPartitionInfo.Size, m.NewPartitionInfo.Hash)
	return pr, nil
}

// check refuses, before anything is produced, what cannot be installed.
func check(m *Manifest, opts Options) error {
	if m.BlockSize == 0 || m.BlockSize&(m.BlockSize-1) != 0 || m.BlockSize > 1<<20 {
		return fmt.Errorf("%w: block size %d", ErrCorrupt, m.BlockSize)
	}
	if m.OldPartitionInfo != nil && (m.OldPartitionInfo.Size > 0 || len(m.OldPartitionInfo.Hash) > 0) {
		return fmt.Errorf("%w: the payload is built against a source partition (old_partition_info)", ErrDeltaUnsupported)
	}
	if !m.HasSignatures {
		return fmt.Errorf("%w: the payload is not signed (no signatures_offset/size)", ErrBadSignature)
	}
	if m.SignaturesSize == 0 || m.SignaturesSize > maxSignaturesSize {
		return fmt.Errorf("%w: signature blob of %d bytes", ErrBadSignature, m.SignaturesSize)
	}
	ni := m.NewPartitionInfo
	if ni == nil || ni.Size == 0 || len(ni.Hash) != sha256.Size {
		return fmt.Errorf("%w: no new_partition_info with a size and a SHA-256", ErrCorrupt)
	}
	if ni.Size > 1<<50 {
		return fmt.Errorf("%w: new partition of %d bytes", ErrCorrupt, ni.Size)
	}
	if len(m.PartitionOperations) == 0 {
		return fmt.Errorf("%w: no partition operations", ErrCorrupt)
	}
	// Data blobs must follow one another, in operation order, up to the
	// signature: the stream is read once.
	var off uint64
	checkOps := func(where string, ops []Operation) error {
		for i, op := range ops {
			if op.Type.isDelta() || len(op.SrcExtents) > 0 {
				return fmt.Errorf("%w: %s operation %d is %s", ErrDeltaUnsupported, where, i, op.Type)
			}
			switch op.Type {
			case OpReplace, OpReplaceBZ, OpReplaceXZ:
			default:
				return fmt.Errorf("%w: %s operation %d is %s", ErrUnsupportedOperation, where, i, op.Type)
			}
			if len(op.DstExtents) == 0 {
				return fmt.Errorf("%w: %s operation %d has no destination", ErrCorrupt, where, i)
			}
			if op.DataLength == 0 {
				continue
			}
			if op.DataOffset != off {
				return fmt.Errorf("%w: %s operation %d has its data at offset %d, expected %d", ErrCorrupt, where, i, op.DataOffset, off)
			}
			if int64(op.DataLength) > opts.MaxOperationData {
				return fmt.Errorf("%w: %s operation %d has %d bytes of data (limit %d)", ErrCorrupt, where, i, op.DataLength, opts.MaxOperationData)
			}
			if len(op.DataSHA256) != sha256.Size {
				return fmt.Errorf("%w: %s operation %d has data but no SHA-256 of it", ErrCorrupt, where, i)
			}
			off += op.DataLength
		}
		return nil
	}
	if err := checkOps("partition", m.PartitionOperations); err != nil {
		return err
	}
	for _, p := range m.Procedures {
		if p.OldInfo != nil && (p.OldInfo.Size > 0 || len(p.OldInfo.Hash) > 0) {
			return fmt.Errorf("%w: the %s procedure is built against an old file", ErrDeltaUnsupported, p.Type)
		}
		if err := checkOps(p.Type.String(), p.Operations); err != nil {
			return err
		}
		if p.NewInfo != nil && p.NewInfo.Size > 1<<40 {
			return fmt.Errorf("%w: %s of %d bytes", ErrCorrupt, p.Type, p.NewInfo.Size)
		}
	}
	if m.SignaturesOffset != off {
		return fmt.Errorf("%w: signature at data offset %d, the operations' data ends at %d", ErrCorrupt, m.SignaturesOffset, off)
	}
	return nil
}

// Manifest is the payload's manifest.
func (r *Reader) Manifest() *Manifest { return r.m }

// ImageSize is the size of the new partition image Read produces.
func (r *Reader) ImageSize() int64 { return r.size }

// ImageSHA256 is the new partition image's SHA-256 as the (signed)
// manifest states it; Read checks it too.
func (r *Reader) ImageSHA256() []byte { return bytes.Clone(r.m.NewPartitionInfo.Hash) }

// Read produces the next bytes of the new partition image. It returns
// io.EOF only after the whole payload was read and verified.
func (r *Reader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if r.cur != nil {
			n, err := r.cur.Read(p)
			if n > 0 {
				k, terr := r.tgt.emit(p[:n])
				if terr != nil {
					r.err = terr
					return 0, r.err
				}
				if k > 0 {
					return k, nil
				}
			}
			switch {
			case err == io.EOF:
				r.cur = nil
			case err != nil:
				r.err = err
			}
			continue
		}
		if r.next < len(r.m.PartitionOperations) {
			op := r.m.PartitionOperations[r.next]
			cur, err := r.startOp(r.tgt, op, r.next)
			if err != nil {
				r.err = err
				continue
			}
			r.next++
			r.cur = cur
			continue
		}
		r.err = r.finish()
		if r.err == nil {
			r.err = io.EOF
		}
	}
}

// startOp reads and checks an operation's blob and returns a reader of
// what it writes.
func (r *Reader) startOp(t *target, op Operation, i int) (io.Reader, error) {
	capacity, err := t.place(op, i)
	if err != nil {
		return nil, err
	}
	blob := make([]byte, op.DataLength)
	if _, err := io.ReadFull(r.src, blob); err != nil {
		return nil, readErr(fmt.Sprintf("%s operation %d", t.name, i), err)
	}
	if op.DataLength > 0 {
		if sum := sha256.Sum256(blob); !bytes.Equal(sum[:], op.DataSHA256) {
			return nil, fmt.Errorf("%w: %s operation %d: data SHA-256 %x, the manifest says %x", ErrCorrupt, t.name, i, sum, op.DataSHA256)
		}
	}
	var dec io.Reader
	switch op.Type {
	case OpReplace:
		dec = bytes.NewReader(blob)
	case OpReplaceBZ:
		dec = bzip2.NewReader(bytes.NewReader(blob))
	case OpReplaceXZ:
		if err := checkXZ(blob); err != nil {
			return nil, fmt.Errorf("%w: %s operation %d: %w", ErrCorrupt, t.name, i, err)
		}
		// The decoder takes the larger of this and the stream's own
		// dictionary size, which checkXZ bounded.
		x, err := xz.ReaderConfig{DictCap: lzma.MinDictCap, SingleStream: true}.NewReader(bytes.NewReader(blob))
		if err != nil {
			return nil, fmt.Errorf("%w: %s operation %d: xz: %w", ErrCorrupt, t.name, i, err)
		}
		dec = x
	}
	return &opReader{dec: dec, capacity: capacity, bs: t.bs, what: fmt.Sprintf("%s operation %d (%s)", t.name, i, op.Type)}, nil
}

// finish applies the procedures, reads the signature, checks that the
// stream ends there, and verifies signature and results.
func (r *Reader) finish() error {
	type done struct {
		t    *target
		info *Info
	}
	var results []done
	for pi, p := range r.m.Procedures {
		info := ProcedureInfo{Type: p.Type}
		var size uint64
		var sum []byte
		if p.NewInfo != nil {
			size, sum = p.NewInfo.Size, p.NewInfo.Hash
			info.Size, info.SHA256 = int64(size), bytes.Clone(sum)
		}
		var w io.Writer
		if r.opts.Procedure != nil {
			var err error
			if w, err = r.opts.Procedure(info); err != nil {
				return fmt.Errorf("%s: %w", p.Type, err)
			}
		}
		if w == nil {
			w = io.Discard
		}
		t := newTarget(fmt.Sprintf("%s (procedure %d)", p.Type, pi), r.m.BlockSize, size, sum)
		for i, op := range p.Operations {
			cur, err := r.startOp(t, op, i)
			if err != nil {
				return err
			}
			if _, err := io.Copy(writerFunc(func(b []byte) (int, error) {
				k, err := t.emit(b)
				if err != nil || k == 0 {
					return len(b), err
				}
				if _, err := w.Write(b[:k]); err != nil {
					return 0, fmt.Errorf("write %s: %w", p.Type, err)
				}
				return len(b), nil
			}), cur); err != nil {
				return err
			}
		}
		results = append(results, done{t, p.NewInfo})
	}

	// Everything up to here is what the signature covers.
	signed := r.src.h.Sum(nil)
	blob := make([]byte, r.m.SignaturesSize)
	if _, err := io.ReadFull(r.src, blob); err != nil {
		return readErr("signature blob", err)
	}
	var one [1]byte
	switch n, err := io.ReadFull(r.src.r, one[:]); {
	case n > 0:
		return fmt.Errorf("%w: data after the signature blob", ErrCorrupt)
	case err != io.EOF:
		return readErr("end of payload", err)
	}
	sigs, err := ParseSignatures(blob)
	if err != nil {
		return err
	}
	r.sigs = sigs
	if err := verifySignatures(signed, sigs, r.opts.PublicKeys); err != nil {
		return err
	}
	if err := r.tgt.finish(); err != nil {
		return err
	}
	for _, d := range results {
		if d.info == nil {
			continue
		}
		if err := d.t.finish(); err != nil {
			return err
		}
	}
	return nil
}

// verifySignatures accepts the payload when any signature verifies with
// any key. update_engine looks only at the entry of version 2; every
// entry signs the same digest, so accepting any is no weaker and lets a
// payload signed by an old and a new key pass with either.
func verifySignatures(digest []byte, sigs []Signature, keys []*rsa.PublicKey) error {
	if len(sigs) == 0 {
		return fmt.Errorf("%w: the signature blob holds no signature", ErrBadSignature)
	}
	for _, s := range sigs {
		for _, k := range keys {
			if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, s.Data) == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: none of %d signature(s) verifies with the %d configured key(s)", ErrBadSignature, len(sigs), len(keys))
}

// Signatures returns the signature entries once Read returned io.EOF.
func (r *Reader) Signatures() []Signature { return r.sigs }

// ParsePublicKey reads an RSA public key in PEM ("PUBLIC KEY", as
// update_engine's update-payload-key.pub.pem, or "RSA PUBLIC KEY").
// Keys under 2048 bits are refused.
func ParsePublicKey(data []byte) (*rsa.PublicKey, error) {
	blk, _ := pem.Decode(data)
	if blk == nil {
		return nil, errors.New("payload key: no PEM block")
	}
	var pub *rsa.PublicKey
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("payload key: %w", err)
		}
		var ok bool
		if pub, ok = k.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("payload key is %T, want RSA", k)
		}
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("payload key: %w", err)
		}
		pub = k
	default:
		return nil, fmt.Errorf("payload key: PEM block %q, want PUBLIC KEY", blk.Type)
	}
	if pub.N.BitLen() < 2048 {
		return nil, fmt.Errorf("payload key of %d bits; at least 2048 required", pub.N.BitLen())
	}
	return pub, nil
}

// source hashes what is read from the payload.
type source struct {
	r io.Reader
	h hash.Hash
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	return n, err
}

func readErr(what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: in the %s", ErrTruncated, what)
	}
	return fmt.Errorf("read payload %s: %w", what, err)
}

// target tracks where the operations write: they must continue exactly
// where the previous one ended, from block 0, so the output is one stream.
type target struct {
	name  string
	bs    uint64
	pos   uint64 // bytes produced by the operations so far
	limit uint64 // bytes that are the image; the rest is padding
	want  []byte // SHA-256 of the first limit bytes; nil when unknown
	h     hash.Hash
}

func newTarget(name string, bs, limit uint64, want []byte) *target {
	if limit == 0 {
		limit = ^uint64(0)
	}
	return &target{name: name, bs: bs, limit: limit, want: want, h: sha256.New()}
}

// place checks an operation's extents and returns how many bytes it may
// write.
func (t *target) place(op Operation, i int) (uint64, error) {
	if t.pos%t.bs != 0 {
		return 0, fmt.Errorf("%w: %s operation %d follows an operation that ended inside a block", ErrUnsupportedOperation, t.name, i)
	}
	next := t.pos / t.bs
	var capacity uint64
	for j, e := range op.DstExtents {
		switch {
		case e.StartBlock == SparseHole:
			return 0, fmt.Errorf("%w: %s operation %d writes to a sparse hole", ErrUnsupportedOperation, t.name, i)
		case e.NumBlocks == 0:
			return 0, fmt.Errorf("%w: %s operation %d has an empty extent", ErrCorrupt, t.name, i)
		case e.StartBlock != next:
			return 0, fmt.Errorf("%w: %s operation %d extent %d starts at block %d, the stream is at block %d (operations must write the blocks in order)",
				ErrUnsupportedOperation, t.name, i, j, e.StartBlock, next)
		case e.NumBlocks > (1<<50)/t.bs:
			return 0, fmt.Errorf("%w: %s operation %d extent of %d blocks", ErrCorrupt, t.name, i, e.NumBlocks)
		}
		next += e.NumBlocks
		capacity += e.NumBlocks * t.bs
		if capacity > 1<<50 {
			return 0, fmt.Errorf("%w: %s operation %d writes too much", ErrCorrupt, t.name, i)
		}
	}
	return capacity, nil
}

// emit accounts for b, produced by the current operation, and returns how
// much of it is image (the rest, past limit, must be zero padding).
func (t *target) emit(b []byte) (int, error) {
	k := len(b)
	if rest := t.limit - min(t.pos, t.limit); uint64(k) > rest {
		k = int(rest)
		for _, c := range b[k:] {
			if c != 0 {
				return 0, fmt.Errorf("%w: the %s operations write data past its size %d", ErrCorrupt, t.name, t.limit)
			}
		}
	}
	t.h.Write(b[:k])
	t.pos += uint64(len(b))
	return k, nil
}

// finish checks size and hash of what was produced.
func (t *target) finish() error {
	if t.want == nil {
		return nil
	}
	if t.pos < t.limit {
		return fmt.Errorf("%w: the %s operations write %d bytes, the manifest says %d", ErrCorrupt, t.name, t.pos, t.limit)
	}
	if sum := t.h.Sum(nil); !bytes.Equal(sum, t.want) {
		return fmt.Errorf("%w: the new %s has SHA-256 %x, the manifest says %x", ErrCorrupt, t.name, sum, t.want)
	}
	return nil
}

// opReader yields an operation's decompressed data, refuses more than its
// extents hold, and pads the last block with zeros as update_engine does.
type opReader struct {
	dec      io.Reader
	capacity uint64
	bs       uint64
	out      uint64
	pad      uint64
	decDone  bool
	what     string
}

func (o *opReader) Read(p []byte) (int, error) {
	for idle := 0; !o.decDone && len(p) > 0; idle++ {
		n, err := o.dec.Read(p)
		o.out += uint64(n)
		if o.out > o.capacity {
			return 0, fmt.Errorf("%w: %s writes more than its %d bytes of extents", ErrCorrupt, o.what, o.capacity)
		}
		switch {
		case err == io.EOF:
			o.decDone = true
			o.pad = (o.bs - o.out%o.bs) % o.bs
		case err != nil:
			return 0, fmt.Errorf("%w: %s: %w", ErrCorrupt, o.what, err)
		case n == 0 && idle >= 100:
			return 0, fmt.Errorf("%w: %s: %w", ErrCorrupt, o.what, io.ErrNoProgress)
		}
		if n > 0 {
			return n, nil
		}
	}
	if o.pad == 0 {
		return 0, io.EOF
	}
	n := int(min(uint64(len(p)), o.pad))
	clear(p[:n])
	o.pad -= uint64(n)
	return n, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
