package sync

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Model updates travel on two topics (docs/PROTOCOL.md, docs/UPDATES.md):
//
//	outpost/v1/{device}/cmd    hub → device: offers ('O' 'M') and chunks ('O' 'K')
//	outpost/v1/{device}/fetch  device → hub: "send me chunk i of offer X" ('O' 'F')
//
// The device pulls one chunk at a time, so it decides when bytes flow (after
// its results, inside its byte budget) and a lost link costs at most the
// chunk in flight.

// FetchTopic is where a device asks the hub for a chunk.
func FetchTopic(device string) string { return TopicPrefix + device + "/fetch" }

const (
	kindOffer = 'M'
	kindChunk = 'K'
	kindFetch = 'F'

	cmdSignLabel = "outpost cmd v1\x00"

	// ChunkHashLen is how many bytes of each chunk's SHA-256 an offer
	// lists: enough to catch a damaged or misplaced chunk at once; the
	// package's own signature and digests are checked at the end anyway.
	ChunkHashLen = 8
	// MinChunk and MaxChunk bound an offer's chunk size.
	MinChunk = 1 << 10
	MaxChunk = 1 << 20
	// DefaultChunk suits a 2G link: about 6 s at 5 KB/s.
	DefaultChunk = 32 << 10
	// maxOfferBytes bounds an offer message (a 1 GiB package in 32 KiB
	// chunks lists 32,768 hashes).
	maxOfferBytes = 1 << 20
)

// Offer tells a device that a model package is available. Meta and Sig
// are the package's own package.json and signature, so the device checks
// the program's signature, the model and the sequence number before it
// downloads a byte.
type Offer struct {
	ID        string `json:"id"` // hex of the first 16 bytes of SHA256
	Model     string `json:"model"`
	Version   string `json:"version"`
	Seq       int64  `json:"seq"`
	Rollback  bool   `json:"rollback,omitempty"`
	Size      int64  `json:"size"`
	ChunkSize int    `json:"chunk_size"`
	SHA256    string `json:"sha256"` // of the whole package file
	Chunks    []byte `json:"chunks"` // ChunkHashLen bytes per chunk
	Meta      []byte `json:"meta"`   // package.json, as signed
	Sig       []byte `json:"sig"`    // the package's ed25519 signature over Meta
}

// NewOffer describes a package file's bytes.
func NewOffer(pkg []byte, model, version string, seq int64, rollback bool, meta, sig []byte, chunk int) *Offer {
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	sum := sha256.Sum256(pkg)
	o := &Offer{ID: hex.EncodeToString(sum[:16]), Model: model, Version: version, Seq: seq, Rollback: rollback,
		Size: int64(len(pkg)), ChunkSize: chunk, SHA256: hex.EncodeToString(sum[:]), Meta: meta, Sig: sig}
	for off := 0; off < len(pkg); off += chunk {
		h := sha256.Sum256(pkg[off:min(off+chunk, len(pkg))])
		o.Chunks = append(o.Chunks, h[:ChunkHashLen]...)
	}
	return o
}

// NumChunks is how many chunks the package has.
func (o *Offer) NumChunks() int {
	return int((o.Size + int64(o.ChunkSize) - 1) / int64(o.ChunkSize))
}

// ChunkLen is the length of chunk i.
func (o *Offer) ChunkLen(i int) int {
	return int(min(int64(o.ChunkSize), o.Size-int64(i)*int64(o.ChunkSize)))
}

// ChunkOK says whether data is chunk i of this offer.
func (o *Offer) ChunkOK(i int, data []byte) bool {
	if i < 0 || i >= o.NumChunks() || len(data) != o.ChunkLen(i) {
		return false
	}
	h := sha256.Sum256(data)
	return bytes.Equal(h[:ChunkHashLen], o.Chunks[i*ChunkHashLen:(i+1)*ChunkHashLen])
}

func (o *Offer) validate() error {
	id, err := hex.DecodeString(o.ID)
	switch {
	case err != nil || len(id) != 16:
		return fmt.Errorf("offer id %q", o.ID)
	case !ValidDeviceID(o.Model):
		return fmt.Errorf("model name %q", o.Model)
	case o.Seq <= 0:
		return fmt.Errorf("seq %d", o.Seq)
	case o.ChunkSize < MinChunk || o.ChunkSize > MaxChunk:
		return fmt.Errorf("chunk size %d (want %d–%d)", o.ChunkSize, MinChunk, MaxChunk)
	case o.Size <= 0 || o.Size > math.MaxInt32*int64(o.ChunkSize):
		return fmt.Errorf("size %d", o.Size)
	case len(o.Chunks) != o.NumChunks()*ChunkHashLen:
		return fmt.Errorf("%d chunk hashes for %d chunks", len(o.Chunks)/ChunkHashLen, o.NumChunks())
	case len(o.SHA256) != 64 || o.SHA256[:32] != o.ID:
		return fmt.Errorf("sha256 %q does not start with the offer id", o.SHA256)
	case len(o.Meta) == 0 || len(o.Sig) != ed25519.SignatureSize:
		return errors.New("no package metadata or signature")
	}
	return nil
}

// EncodeOffer writes 'O' 'M' version flags | JSON, signed for device when
// key is set (the same trailer as a signed ack, another label).
func EncodeOffer(o *Offer, device string, key ed25519.PrivateKey) []byte {
	body, _ := json.Marshal(o)
	msg := append([]byte{'O', kindOffer, ProtocolVersion, 0}, body...)
	if key != nil {
		msg = signMsg(cmdSignLabel, msg, device, key)
	}
	return msg
}

// DecodeOffer checks a raw offer for device against the pinned hub keys
// (none pinned: any) and parses it. Errors wrap ErrMalformed, ErrVersion or
// ErrForged.
func DecodeOffer(msg []byte, device string, hubKeys []ed25519.PublicKey) (*Offer, error) {
	if len(msg) > maxOfferBytes {
		return nil, fmt.Errorf("%w: offer of %d bytes (max %d)", ErrMalformed, len(msg), maxOfferBytes)
	}
	body, err := cmdBody(msg, kindOffer, "an offer", device, hubKeys)
	if err != nil {
		return nil, err
	}
	var o Offer
	if err := json.Unmarshal(body, &o); err != nil {
		return nil, fmt.Errorf("%w: offer: %v", ErrMalformed, err)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("%w: offer: %v", ErrMalformed, err)
	}
	return &o, nil
}

// cmdBody checks a hub → device message: signed by a pinned hub key for
// device (when keys are pinned), of the expected kind and this version,
// no flag but "signed"; it returns the body without the signature. Every
// signed command goes through it (the trailer is never sliced twice).
func cmdBody(msg []byte, kind byte, what, device string, hubKeys []ed25519.PublicKey) ([]byte, error) {
	if err := verifyMsg(cmdSignLabel, msg, device, hubKeys); err != nil {
		return nil, err
	}
	if len(msg) < 4 || msg[0] != 'O' || msg[1] != kind || msg[3]&^flagSigned != 0 {
		return nil, fmt.Errorf("%w: not %s", ErrMalformed, what)
	}
	if msg[2] != ProtocolVersion {
		return nil, fmt.Errorf("%w: version %d", ErrVersion, msg[2])
	}
	body := msg[4:]
	if msg[3]&flagSigned != 0 {
		if len(body) < sigTrailer {
			return nil, fmt.Errorf("%w: %s: signature truncated", ErrMalformed, what)
		}
		body = body[:len(body)-sigTrailer]
	}
	return body, nil
}

// EncodeChunk writes 'O' 'K' version 0 | offer id [16] | index uvarint | data.
func EncodeChunk(offerID string, i int, data []byte) []byte {
	id, _ := hex.DecodeString(offerID)
	msg := append([]byte{'O', kindChunk, ProtocolVersion, 0}, id...)
	msg = binary.AppendUvarint(msg, uint64(i))
	return append(msg, data...)
}

// DecodeChunk parses a chunk message (its content is checked against the
// offer by the fetcher).
func DecodeChunk(msg []byte) (offerID string, i int, data []byte, err error) {
	offerID, i, n, err := decodeRef(msg, kindChunk)
	if err != nil {
		return "", 0, nil, err
	}
	return offerID, i, msg[n:], nil
}

// FetchRequest encodes a device's request for chunk i:
// 'O' 'F' version 0 | offer id [16] | index uvarint.
func FetchRequest(offerID string, i int) []byte {
	msg := EncodeChunk(offerID, i, nil)
	msg[1] = kindFetch
	return msg
}

// DecodeFetch parses a fetch request.
func DecodeFetch(msg []byte) (offerID string, i int, err error) {
	offerID, i, n, err := decodeRef(msg, kindFetch)
	if err == nil && n != len(msg) {
		err = fmt.Errorf("%w: %d trailing bytes in a fetch request", ErrMalformed, len(msg)-n)
	}
	return offerID, i, err
}

func decodeRef(msg []byte, kind byte) (string, int, int, error) {
	if len(msg) < 4+16+1 || msg[0] != 'O' || msg[1] != kind || msg[3] != 0 {
		return "", 0, 0, fmt.Errorf("%w: not an outpost %c message (%d bytes)", ErrMalformed, kind, len(msg))
	}
	if msg[2] != ProtocolVersion {
		return "", 0, 0, fmt.Errorf("%w: version %d", ErrVersion, msg[2])
	}
	i, n := binary.Uvarint(msg[20:])
	if n <= 0 || i > math.MaxInt32 {
		return "", 0, 0, fmt.Errorf("%w: chunk index", ErrMalformed)
	}
	return hex.EncodeToString(msg[4:20]), int(i), 20 + n, nil
}

// CmdKind names what a cmd-topic message is: "offer", "chunk",
// "evidence-ack", "review", "warning" or "".
func CmdKind(msg []byte) string {
	if len(msg) < 2 || msg[0] != 'O' {
		return ""
	}
	switch msg[1] {
	case kindOffer:
		return "offer"
	case kindChunk:
		return "chunk"
	case kindEvidenceAck:
		return "evidence-ack"
	case kindReview:
		return "review"
	case kindWarning:
		return "warning"
	}
	return ""
}
