// Package payloadtest builds full update payloads in the format package
// payload reads, for tests: the layout and signing follow update_engine's
// full-payload generator (1 MiB chunks by default there, smaller here so
// tests get several operations) and its signer (PKCS#1 v1.5 over the
// SHA-256 of header, manifest and data).
package payloadtest

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os/exec"

	"github.com/ulikunitz/xz"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/offpeak/offpeak/internal/update/payload"
)

// Options shape a payload.
type Options struct {
	// Keys sign the payload, one signature each; none leaves it unsigned.
	Keys []*rsa.PrivateKey
	// Sign, when set, replaces Keys' signing: it gets the digest and
	// returns the signatures (of the keys' sizes, SigSizes).
	Sign     func(digest []byte) ([][]byte, error)
	SigSizes []int
	// BlockSize defaults to 4096, ChunkSize to 64 KiB.
	BlockSize, ChunkSize int
	// Ops gives the operation type of each chunk, repeated as needed;
	// REPLACE when empty.
	Ops []payload.OpType
	// Kernel, when set, is added as a kernel procedure after the
	// partition's data, as update_engine adds vmlinuz.
	Kernel []byte
	// Version is written in the header; 1 when 0.
	Version uint64
	// Mutate may change the manifest before it is encoded and signed.
	Mutate func(*payload.Manifest)
	// Blob, when set, may replace operation i's data before it is
	// hashed.
	Blob func(i int, blob []byte) []byte
}

// Build returns a full payload of image.
func Build(image []byte, o Options) ([]byte, error) {
	if o.BlockSize == 0 {
		o.BlockSize = 4096
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = 64 << 10
	}
	if o.ChunkSize%o.BlockSize != 0 {
		return nil, fmt.Errorf("chunk size %d is not a multiple of the block size %d", o.ChunkSize, o.BlockSize)
	}
	if len(o.Ops) == 0 {
		o.Ops = []payload.OpType{payload.OpReplace}
	}
	var data bytes.Buffer
	chunks := func(img []byte, first int) ([]payload.Operation, error) {
		var ops []payload.Operation
		for i, off := 0, 0; off < len(img); i, off = i+1, off+o.ChunkSize {
			part := img[off:min(off+o.ChunkSize, len(img))]
			typ := o.Ops[(first+i)%len(o.Ops)]
			blob, err := Compress(typ, part)
			if err != nil {
				return nil, err
			}
			if o.Blob != nil {
				blob = o.Blob(first+i, blob)
			}
			sum := sha256.Sum256(blob)
			ops = append(ops, payload.Operation{
				Type: typ, DataOffset: uint64(data.Len()), DataLength: uint64(len(blob)),
				DstExtents: []payload.Extent{{StartBlock: uint64(off / o.BlockSize), NumBlocks: uint64(o.ChunkSize / o.BlockSize)}},
				DataSHA256: sum[:],
			})
			data.Write(blob)
		}
		return ops, nil
	}
	m := &payload.Manifest{BlockSize: uint64(o.BlockSize)}
	ops, err := chunks(image, 0)
	if err != nil {
		return nil, err
	}
	m.PartitionOperations = ops
	isum := sha256.Sum256(image)
	m.NewPartitionInfo = &payload.Info{Size: uint64(len(image)), Hash: isum[:]}
	if o.Kernel != nil {
		kops, err := chunks(o.Kernel, len(ops))
		if err != nil {
			return nil, err
		}
		ksum := sha256.Sum256(o.Kernel)
		m.Procedures = append(m.Procedures, payload.Procedure{
			Type: payload.ProcedureKernel, HasType: true, Operations: kops,
			NewInfo: &payload.Info{Size: uint64(len(o.Kernel)), Hash: ksum[:]},
		})
		// The legacy no-op list mirrors the procedure's data.
		for _, op := range kops {
			m.NoopOperations = append(m.NoopOperations, payload.Operation{
				Type: payload.OpReplace, DataOffset: op.DataOffset, DataLength: op.DataLength, DataSHA256: op.DataSHA256,
				DstExtents: []payload.Extent{{StartBlock: payload.SparseHole, NumBlocks: (op.DataLength + uint64(o.BlockSize) - 1) / uint64(o.BlockSize)}},
			})
		}
	}

	sizes := o.SigSizes
	if o.Sign == nil {
		sizes = nil
		for _, k := range o.Keys {
			sizes = append(sizes, k.Size())
		}
	}
	var sigBlobSize int
	if len(sizes) > 0 {
		zero := make([][]byte, len(sizes))
		for i, n := range sizes {
			zero[i] = make([]byte, n)
		}
		sigBlobSize = len(EncodeSignatures(signatureEntries(zero)))
		m.SignaturesOffset, m.SignaturesSize, m.HasSignatures = uint64(data.Len()), uint64(sigBlobSize), true
		m.NoopOperations = append(m.NoopOperations, payload.Operation{
			Type: payload.OpReplace, DataOffset: uint64(data.Len()), DataLength: uint64(sigBlobSize),
			DstExtents: []payload.Extent{{StartBlock: payload.SparseHole, NumBlocks: uint64((sigBlobSize + o.BlockSize - 1) / o.BlockSize)}},
		})
	}
	if o.Mutate != nil {
		o.Mutate(m)
	}
	mb := EncodeManifest(m)
	version := o.Version
	if version == 0 {
		version = payload.Version1
	}
	var out bytes.Buffer
	out.WriteString(payload.Magic)
	binary.Write(&out, binary.BigEndian, version)
	binary.Write(&out, binary.BigEndian, uint64(len(mb)))
	out.Write(mb)
	out.Write(data.Bytes())
	if len(sizes) == 0 {
		return out.Bytes(), nil
	}
	digest := sha256.Sum256(out.Bytes())
	var sigs [][]byte
	if o.Sign != nil {
		if sigs, err = o.Sign(digest[:]); err != nil {
			return nil, err
		}
	} else {
		for _, k := range o.Keys {
			s, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
			if err != nil {
				return nil, err
			}
			sigs = append(sigs, s)
		}
	}
	blob := EncodeSignatures(signatureEntries(sigs))
	if len(blob) != sigBlobSize {
		return nil, fmt.Errorf("signature blob of %d bytes, %d reserved", len(blob), sigBlobSize)
	}
	out.Write(blob)
	return out.Bytes(), nil
}

// signatureEntries numbers signatures as update_engine does: the last one
// has version 2.
func signatureEntries(sigs [][]byte) []payload.Signature {
	out := make([]payload.Signature, len(sigs))
	v := uint32(2 + 1 - len(sigs))
	for i, s := range sigs {
		out[i] = payload.Signature{Version: v, Data: s}
		v++
	}
	return out
}

// Compress encodes a chunk for an operation type. REPLACE_BZ runs the
// bzip2 program (Go has no bzip2 writer); tests skip without it.
func Compress(typ payload.OpType, b []byte) ([]byte, error) {
	switch typ {
	case payload.OpReplaceBZ:
		cmd := exec.Command("bzip2", "-c", "-9")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("bzip2: %w", err)
		}
		return out, nil
	case payload.OpReplaceXZ:
		var buf bytes.Buffer
		// A dictionary no larger than the chunk: the default 8 MiB one
		// makes tests slow for nothing.
		w, err := xz.WriterConfig{DictCap: max(len(b), 1<<12)}.NewWriter(&buf)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(b); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	default:
		return bytes.Clone(b), nil
	}
}

// EncodeManifest writes a DeltaArchiveManifest.
func EncodeManifest(m *payload.Manifest) []byte {
	var b []byte
	for _, op := range m.PartitionOperations {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeOp(op))
	}
	for _, op := range m.NoopOperations {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeOp(op))
	}
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, m.BlockSize)
	if m.HasSignatures {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, m.SignaturesOffset)
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, m.SignaturesSize)
	}
	if m.OldPartitionInfo != nil {
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeInfo(m.OldPartitionInfo))
	}
	if m.NewPartitionInfo != nil {
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeInfo(m.NewPartitionInfo))
	}
	for _, p := range m.Procedures {
		var pb []byte
		if p.HasType {
			pb = protowire.AppendTag(pb, 1, protowire.VarintType)
			pb = protowire.AppendVarint(pb, uint64(p.Type))
		}
		for _, op := range p.Operations {
			pb = protowire.AppendTag(pb, 2, protowire.BytesType)
			pb = protowire.AppendBytes(pb, encodeOp(op))
		}
		if p.OldInfo != nil {
			pb = protowire.AppendTag(pb, 3, protowire.BytesType)
			pb = protowire.AppendBytes(pb, encodeInfo(p.OldInfo))
		}
		if p.NewInfo != nil {
			pb = protowire.AppendTag(pb, 4, protowire.BytesType)
			pb = protowire.AppendBytes(pb, encodeInfo(p.NewInfo))
		}
		b = protowire.AppendTag(b, 10, protowire.BytesType)
		b = protowire.AppendBytes(b, pb)
	}
	return b
}

func encodeOp(op payload.Operation) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(op.Type))
	if op.DataLength > 0 || op.DataOffset > 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, op.DataOffset)
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, op.DataLength)
	}
	for _, e := range op.SrcExtents {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeExtent(e))
	}
	if op.SrcLength > 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, op.SrcLength)
	}
	for _, e := range op.DstExtents {
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, encodeExtent(e))
	}
	if op.DstLength > 0 {
		b = protowire.AppendTag(b, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, op.DstLength)
	}
	if op.DataSHA256 != nil {
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendBytes(b, op.DataSHA256)
	}
	return b
}

func encodeExtent(e payload.Extent) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, e.StartBlock)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, e.NumBlocks)
	return b
}

func encodeInfo(i *payload.Info) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, i.Size)
	if i.Hash != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, i.Hash)
	}
	return b
}

// EncodeSignatures writes a Signatures message.
func EncodeSignatures(sigs []payload.Signature) []byte {
	var b []byte
	for _, s := range sigs {
		var sb []byte
		sb = protowire.AppendTag(sb, 1, protowire.VarintType)
		sb = protowire.AppendVarint(sb, uint64(s.Version))
		sb = protowire.AppendTag(sb, 2, protowire.BytesType)
		sb = protowire.AppendBytes(sb, s.Data)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, sb)
	}
	return b
}
