package payload

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// OpType is an InstallOperation type. Flatcar's update_metadata.proto
// defines 0-3; the others are Chromium's later numbers, named so that a
// refusal can say what was offered.
type OpType uint64

// Operation types.
const (
	OpReplace         OpType = 0
	OpReplaceBZ       OpType = 1
	OpMove            OpType = 2
	OpBsdiff          OpType = 3
	OpSourceCopy      OpType = 4
	OpSourceBsdiff    OpType = 5
	OpZero            OpType = 6
	OpDiscard         OpType = 7
	OpReplaceXZ       OpType = 8
	OpPuffdiff        OpType = 9
	OpBrotliBsdiff    OpType = 10
	OpZucchini        OpType = 11
	OpLZ4DiffBsdiff   OpType = 12
	OpLZ4DiffPuffdiff OpType = 13
)

var opNames = map[OpType]string{
	OpReplace: "REPLACE", OpReplaceBZ: "REPLACE_BZ", OpMove: "MOVE", OpBsdiff: "BSDIFF",
	OpSourceCopy: "SOURCE_COPY", OpSourceBsdiff: "SOURCE_BSDIFF", OpZero: "ZERO", OpDiscard: "DISCARD",
	OpReplaceXZ: "REPLACE_XZ", OpPuffdiff: "PUFFDIFF", OpBrotliBsdiff: "BROTLI_BSDIFF",
	OpZucchini: "ZUCCHINI", OpLZ4DiffBsdiff: "LZ4DIFF_BSDIFF", OpLZ4DiffPuffdiff: "LZ4DIFF_PUFFDIFF",
}

func (t OpType) String() string {
	if s, ok := opNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type %d", uint64(t))
}

// isDelta reports the operations that read the old partition.
func (t OpType) isDelta() bool {
	switch t {
	case OpMove, OpBsdiff, OpSourceCopy, OpSourceBsdiff, OpPuffdiff, OpBrotliBsdiff,
		OpZucchini, OpLZ4DiffBsdiff, OpLZ4DiffPuffdiff:
		return true
	}
	return false
}

// SparseHole as an extent's start block means "write nowhere".
const SparseHole = ^uint64(0)

// Extent is a run of blocks.
type Extent struct {
	StartBlock uint64
	NumBlocks  uint64
}

// Operation is one InstallOperation.
type Operation struct {
	Type       OpType
	DataOffset uint64
	DataLength uint64
	SrcExtents []Extent
	SrcLength  uint64
	DstExtents []Extent
	DstLength  uint64
	DataSHA256 []byte
}

// Info is an InstallInfo: the size and SHA-256 of a partition or file.
type Info struct {
	Size uint64
	Hash []byte
}

// ProcedureType says what an InstallProcedure installs.
type ProcedureType uint64

// Procedure types.
const (
	ProcedureKernel    ProcedureType = 0
	ProcedurePCRPolicy ProcedureType = 1
)

func (t ProcedureType) String() string {
	switch t {
	case ProcedureKernel:
		return "kernel"
	case ProcedurePCRPolicy:
		return "pcr-policy"
	}
	return fmt.Sprintf("procedure %d", uint64(t))
}

// Procedure is an InstallProcedure: a file next to the partition (the
// kernel, a PCR policy).
type Procedure struct {
	Type       ProcedureType
	HasType    bool
	Operations []Operation
	OldInfo    *Info
	NewInfo    *Info
}

// Manifest is the DeltaArchiveManifest of a payload.
type Manifest struct {
	PartitionOperations []Operation
	// NoopOperations exist for old clients only (they point at the
	// procedures' data and the signature); they are ignored, as current
	// update_engine ignores them.
	NoopOperations   []Operation
	BlockSize        uint64
	SignaturesOffset uint64
	SignaturesSize   uint64
	HasSignatures    bool
	OldPartitionInfo *Info
	NewPartitionInfo *Info
	Procedures       []Procedure
}

// Signature is one entry of the signature blob.
type Signature struct {
	Version uint32
	Data    []byte
}

// Header is the fixed start of a payload.
type Header struct {
	Version      uint64
	ManifestSize uint64
}

// Header layout: "CrAU", version (big endian uint64), manifest size (big
// endian uint64).
const (
	Magic      = "CrAU"
	HeaderSize = 20
	// Version1 is the only format version update_engine (Flatcar) writes.
	Version1 = 1
)

// HasMagic reports whether b starts like a payload.
func HasMagic(b []byte) bool { return len(b) >= len(Magic) && string(b[:len(Magic)]) == Magic }

// ParseHeader checks the magic and version and returns the manifest size.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < len(Magic) || string(b[:len(Magic)]) != Magic {
		return Header{}, fmt.Errorf("%w: no %q magic", ErrNotPayload, Magic)
	}
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header of %d bytes", ErrTruncated, len(b))
	}
	h := Header{Version: binary.BigEndian.Uint64(b[4:12]), ManifestSize: binary.BigEndian.Uint64(b[12:20])}
	if h.Version != Version1 {
		return Header{}, fmt.Errorf("%w: payload format version %d (only %d, Flatcar's, is supported)", ErrUnsupportedVersion, h.Version, Version1)
	}
	return h, nil
}

// ParseManifest decodes a DeltaArchiveManifest. Unknown fields are skipped
// as protobuf requires; known fields of the wrong wire type, truncated
// fields and operations without a type are errors.
func ParseManifest(b []byte) (*Manifest, error) {
	m := &Manifest{BlockSize: 4096}
	var hasOffset, hasSize bool
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1, 2:
			if typ != protowire.BytesType {
				return wireErr("operation", typ)
			}
			op, err := parseOperation(v)
			if err != nil {
				return err
			}
			if num == 1 {
				m.PartitionOperations = append(m.PartitionOperations, op)
			} else {
				m.NoopOperations = append(m.NoopOperations, op)
			}
		case 3:
			if typ != protowire.VarintType {
				return wireErr("block_size", typ)
			}
			m.BlockSize = uint64(uint32(u))
		case 4:
			if typ != protowire.VarintType {
				return wireErr("signatures_offset", typ)
			}
			m.SignaturesOffset, hasOffset = u, true
		case 5:
			if typ != protowire.VarintType {
				return wireErr("signatures_size", typ)
			}
			m.SignaturesSize, hasSize = u, true
		case 8, 9:
			if typ != protowire.BytesType {
				return wireErr("partition_info", typ)
			}
			info, err := parseInfo(v)
			if err != nil {
				return err
			}
			if num == 8 {
				m.OldPartitionInfo = info
			} else {
				m.NewPartitionInfo = info
			}
		case 10:
			if typ != protowire.BytesType {
				return wireErr("procedures", typ)
			}
			p, err := parseProcedure(v)
			if err != nil {
				return err
			}
			m.Procedures = append(m.Procedures, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	m.HasSignatures = hasOffset && hasSize
	return m, nil
}

func parseOperation(b []byte) (Operation, error) {
	var op Operation
	hasType := false
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1, 2, 3, 5, 7:
			if typ != protowire.VarintType {
				return wireErr("operation field", typ)
			}
			switch num {
			case 1:
				op.Type, hasType = OpType(u), true
			case 2:
				op.DataOffset = uint64(uint32(u))
			case 3:
				op.DataLength = uint64(uint32(u))
			case 5:
				op.SrcLength = u
			case 7:
				op.DstLength = u
			}
		case 4, 6:
			if typ != protowire.BytesType {
				return wireErr("extent", typ)
			}
			e, err := parseExtent(v)
			if err != nil {
				return err
			}
			if num == 4 {
				op.SrcExtents = append(op.SrcExtents, e)
			} else {
				op.DstExtents = append(op.DstExtents, e)
			}
		case 8:
			if typ != protowire.BytesType {
				return wireErr("data_sha256_hash", typ)
			}
			op.DataSHA256 = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return Operation{}, err
	}
	if !hasType {
		return Operation{}, fmt.Errorf("operation without a type")
	}
	return op, nil
}

func parseExtent(b []byte) (Extent, error) {
	var e Extent
	err := fields(b, func(num protowire.Number, typ protowire.Type, _ []byte, u uint64) error {
		switch num {
		case 1, 2:
			if typ != protowire.VarintType {
				return wireErr("extent field", typ)
			}
			if num == 1 {
				e.StartBlock = u
			} else {
				e.NumBlocks = u
			}
		}
		return nil
	})
	return e, err
}

func parseInfo(b []byte) (*Info, error) {
	info := &Info{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1:
			if typ != protowire.VarintType {
				return wireErr("info size", typ)
			}
			info.Size = u
		case 2:
			if typ != protowire.BytesType {
				return wireErr("info hash", typ)
			}
			info.Hash = append([]byte(nil), v...)
		}
		return nil
	})
	return info, err
}

func parseProcedure(b []byte) (Procedure, error) {
	var p Procedure
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
		switch num {
		case 1:
			if typ != protowire.VarintType {
				return wireErr("procedure type", typ)
			}
			p.Type, p.HasType = ProcedureType(u), true
		case 2:
			if typ != protowire.BytesType {
				return wireErr("procedure operation", typ)
			}
			op, err := parseOperation(v)
			if err != nil {
				return err
			}
			p.Operations = append(p.Operations, op)
		case 3, 4:
			if typ != protowire.BytesType {
				return wireErr("procedure info", typ)
			}
			info, err := parseInfo(v)
			if err != nil {
				return err
			}
			if num == 3 {
				p.OldInfo = info
			} else {
				p.NewInfo = info
			}
		}
		return nil
	})
	return p, err
}

// ParseSignatures decodes the Signatures message at the end of a payload.
func ParseSignatures(b []byte) ([]Signature, error) {
	var sigs []Signature
	err := fields(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != 1 {
			return nil
		}
		if typ != protowire.BytesType {
			return wireErr("signature", typ)
		}
		var s Signature
		err := fields(v, func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error {
			switch num {
			case 1:
				if typ != protowire.VarintType {
					return wireErr("signature version", typ)
				}
				s.Version = uint32(u)
			case 2:
				if typ != protowire.BytesType {
					return wireErr("signature data", typ)
				}
				s.Data = append([]byte(nil), v...)
			}
			return nil
		})
		if err != nil {
			return err
		}
		sigs = append(sigs, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: signature blob: %w", ErrBadSignature, err)
	}
	return sigs, nil
}

// fields walks a protobuf message, calling fn with each field's number,
// wire type and value (v for bytes, u for varints and fixed-size values).
// Groups are refused: update_metadata.proto has none.
func fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, u uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var u uint64
		switch typ {
		case protowire.VarintType:
			u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			u = uint64(x)
		case protowire.Fixed64Type:
			u, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			return fmt.Errorf("field %d: wire type %d not expected", num, typ)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, u); err != nil {
			return err
		}
	}
	return nil
}

func wireErr(what string, typ protowire.Type) error {
	return fmt.Errorf("%s has wire type %d", what, typ)
}
