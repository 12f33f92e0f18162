package payload

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxXZDict bounds the LZMA2 dictionary an operation may ask for. The
// decoder allocates what the stream's block headers say, and the manifest
// that vouches for the blob is only verified at the end of the payload, so
// an unchecked header could make one operation allocate gigabytes. 64 MiB
// is what `xz -9` uses.
const maxXZDict = 64 << 20

// xzDict returns the largest LZMA2 dictionary the blocks of a single xz
// stream declare, walking the blocks through the stream's index.
func xzDict(b []byte) (int64, error) {
	const hdr, ftr = 12, 12
	// Stream padding: zero bytes in groups of four.
	for len(b) >= hdr+ftr+4 && binary.LittleEndian.Uint32(b[len(b)-4:]) == 0 {
		b = b[:len(b)-4]
	}
	if len(b) < hdr+ftr || string(b[:6]) != "\xfd7zXZ\x00" || string(b[len(b)-2:]) != "YZ" {
		return 0, errors.New("not an xz stream")
	}
	checkSize := xzCheckSize(b[7] & 0x0f)
	foot := b[len(b)-ftr:]
	backward := (int64(binary.LittleEndian.Uint32(foot[4:8])) + 1) * 4
	indexAt := int64(len(b)-ftr) - backward
	if indexAt < hdr || b[indexAt] != 0 {
		return 0, errors.New("xz: bad index position")
	}
	idx := b[indexAt+1 : len(b)-ftr]
	records, n := uvarint(idx)
	if n <= 0 || records > uint64(len(idx)) {
		return 0, errors.New("xz: bad index")
	}
	idx = idx[n:]
	var dict int64
	off := int64(hdr)
	for range records {
		unpadded, n1 := uvarint(idx)
		if n1 <= 0 {
			return 0, errors.New("xz: bad index record")
		}
		_, n2 := uvarint(idx[n1:])
		if n2 <= 0 {
			return 0, errors.New("xz: bad index record")
		}
		idx = idx[n1+n2:]
		if off >= indexAt {
			return 0, errors.New("xz: index lists more blocks than the stream holds")
		}
		d, err := xzBlockDict(b[off:indexAt])
		if err != nil {
			return 0, err
		}
		dict = max(dict, d)
		if unpadded > uint64(indexAt-off) || unpadded < uint64(checkSize) {
			return 0, errors.New("xz: block size out of range")
		}
		off += (int64(unpadded) + 3) &^ 3
	}
	if off != indexAt {
		return 0, errors.New("xz: blocks do not end at the index")
	}
	return dict, nil
}

// xzBlockDict reads a block header's filter flags and returns the LZMA2
// dictionary size.
func xzBlockDict(b []byte) (int64, error) {
	size := (int(b[0]) + 1) * 4
	if b[0] == 0 || size > len(b) {
		return 0, errors.New("xz: bad block header")
	}
	h := b[1 : size-4]
	flags := h[0]
	h = h[1:]
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if present {
			_, n := uvarint(h)
			if n <= 0 {
				return 0, errors.New("xz: bad block header")
			}
			h = h[n:]
		}
	}
	var dict int64
	for range int(flags&3) + 1 {
		id, n := uvarint(h)
		if n <= 0 {
			return 0, errors.New("xz: bad filter flags")
		}
		h = h[n:]
		psize, n := uvarint(h)
		if n <= 0 || psize > uint64(len(h)-n) {
			return 0, errors.New("xz: bad filter flags")
		}
		props := h[n : n+int(psize)]
		h = h[n+int(psize):]
		if id == 0x21 { // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return 0, errors.New("xz: bad LZMA2 properties")
			}
			c := props[0]
			if c == 40 {
				dict = 1<<32 - 1
			} else {
				dict = int64(2|c&1) << (c/2 + 11)
			}
		}
	}
	return dict, nil
}

func xzCheckSize(id byte) int {
	switch {
	case id == 0:
		return 0
	case id <= 3:
		return 4
	case id <= 6:
		return 8
	case id <= 9:
		return 16
	case id <= 12:
		return 32
	}
	return 64
}

// uvarint reads xz's multibyte integer (at most 9 bytes).
func uvarint(b []byte) (uint64, int) {
	var x uint64
	for i := 0; i < len(b) && i < 9; i++ {
		x |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return x, i + 1
		}
	}
	return 0, -1
}

// checkXZ refuses a blob whose dictionary is too large to allocate.
func checkXZ(blob []byte) error {
	d, err := xzDict(blob)
	if err != nil {
		return err
	}
	if d > maxXZDict {
		return fmt.Errorf("xz dictionary of %d bytes (limit %d)", d, maxXZDict)
	}
	return nil
}
