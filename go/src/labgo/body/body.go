// Package body is the deterministic, incompressible body of `GET /bytes/{n}`.
//
// Byte i of every body is byte i of an AES-128-CTR keystream (128-bit big-endian counter
// starting at 0) under the key SHA-256("lab /bytes v1")[:16]: the same bytes as the reference
// server's lab/http/payload.py, so clients verify any server's bodies with one hash.
//
// Go's AES-CTR makes ≈ 0.5 GB/s on this class of machine (one AES call per block), slower than
// the network on loopback; so the keystream is cached in 1 MiB segments, each computed on first
// use and shared by all requests, up to CacheBytes (bodies, or parts of them, beyond it are
// computed as they are sent). Caddy serves the same bodies from the page cache.
package body

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"io"
	"sync"
)

// Seed is the text the key derives from (lab/http/payload.py BODY_SEED).
const Seed = "lab /bytes v1"

const (
	blockBytes   = 16      // AES block size
	segmentBytes = 1 << 20 // unit of the keystream cache
	// ChunkBytes is the size of the pieces a body is written in (the reference's 256 KiB).
	ChunkBytes = 256 * 1024
)

// CacheBytes bounds the cached keystream (set before serving; 256 MiB by default).
var CacheBytes int64 = 256 << 20

var (
	block    cipher.Block
	segments sync.Map // segment index → *segment
)

type segment struct {
	once sync.Once
	data []byte
}

func init() {
	key := sha256.Sum256([]byte(Seed))
	var err error
	if block, err = aes.NewCipher(key[:16]); err != nil {
		panic(err)
	}
}

// keystreamAt is a CTR stream positioned at the block that holds byte `offset`.
func keystreamAt(offset int64) cipher.Stream {
	iv := make([]byte, blockBytes)
	counter := uint64(offset / blockBytes)
	for i := 0; i < 8; i++ {
		iv[15-i] = byte(counter >> (8 * i))
	}
	return cipher.NewCTR(block, iv)
}

// cached is the keystream segment k (bytes [k MiB, (k+1) MiB)), computed once.
func cached(k int64) []byte {
	v, _ := segments.LoadOrStore(k, &segment{})
	s := v.(*segment)
	s.once.Do(func() {
		s.data = make([]byte, segmentBytes)
		keystreamAt(k*segmentBytes).XORKeyStream(s.data, s.data)
	})
	return s.data
}

// computed is bytes [offset, offset+length) without the cache.
func computed(offset, length int64) []byte {
	skip := offset % blockBytes
	out := make([]byte, skip+length)
	keystreamAt(offset).XORKeyStream(out, out)
	return out[skip:]
}

// piece is bytes [offset, offset+length) of the body, length ≤ ChunkBytes, from the cache when
// the range lies within it (no copy), else computed.
func piece(offset, length int64) []byte {
	k := offset / segmentBytes
	inSegment := offset%segmentBytes+length <= segmentBytes
	if inSegment && (k+1)*segmentBytes <= CacheBytes {
		start := offset % segmentBytes
		return cached(k)[start : start+length]
	}
	return computed(offset, length)
}

// Warm computes the cached keystream covering bytes [0, n) (within CacheBytes) now, so that
// the first request for a body of n bytes costs what the later ones do.
func Warm(n int64) {
	for k := int64(0); k*segmentBytes < n && (k+1)*segmentBytes <= CacheBytes; k++ {
		cached(k)
	}
}

// Slice returns bytes [offset, offset+length) of every body (a copy).
func Slice(offset, length int64) []byte {
	out := make([]byte, 0, length)
	for off := offset; off < offset+length; {
		k := ChunkBytes - off%ChunkBytes // pieces never straddle a segment
		if k > offset+length-off {
			k = offset + length - off
		}
		out = append(out, piece(off, k)...)
		off += k
	}
	return out
}

// Write writes the n-byte body to w in pieces of at most ChunkBytes; it stops at the first
// write error.
func Write(w io.Writer, n int64) error {
	for off := int64(0); off < n; off += ChunkBytes {
		k := int64(ChunkBytes)
		if k > n-off {
			k = n - off
		}
		if _, err := w.Write(piece(off, k)); err != nil {
			return err
		}
	}
	return nil
}
