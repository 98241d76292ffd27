// Package pods is the synthetic Kubernetes data of the List and watch routes: the same bytes as
// the reference server's lab/http/pods.py (pod i of a namespace is a pure function of
// (namespace, i, size)), paged as kube-apiserver pages a List.
package pods

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ListResourceVersion is the resourceVersion of the (static) collection.
const ListResourceVersion = 1000

const tokenVersion = "lab/v1"

var (
	namespaceRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// padding character j of pod i is padDigest[(start_i + j) % 64] (pods.py _PAD_SOURCE)
	padDigest = func() string { d := sha256.Sum256([]byte("lab pod padding")); return hex.EncodeToString(d[:]) }()
	// the uuid5 namespace of pod uids: 6c61622d-706f-6473-0000-000000000000 ("lab-pods")
	uidNamespace = [16]byte{0x6c, 0x61, 0x62, 0x2d, 0x70, 0x6f, 0x64, 0x73}
)

// ErrBadList marks malformed List parameters (answered with 400).
var ErrBadList = errors.New("bad list request")

// ValidNamespace is true when ns is a DNS-1123 label, as Kubernetes namespaces are.
func ValidNamespace(ns string) bool { return namespaceRE.MatchString(ns) }

// uuid5 is RFC 4122's name-based (SHA-1) UUID of name in namespace, as Python's uuid.uuid5.
func uuid5(namespace [16]byte, name string) string {
	h := sha1.New()
	h.Write(namespace[:])
	h.Write([]byte(name))
	u := h.Sum(nil)[:16]
	u[6] = (u[6] & 0x0f) | 0x50
	u[8] = (u[8] & 0x3f) | 0x80
	x := hex.EncodeToString(u)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

func podBytes(ns string, i int, padding string) []byte {
	name := fmt.Sprintf("pod-%05d", i)
	var b strings.Builder
	b.WriteString(`{"metadata":{"name":"` + name + `","namespace":"` + ns + `","uid":"`)
	b.WriteString(uuid5(uidNamespace, ns+"/"+name))
	b.WriteString(`","resourceVersion":"` + strconv.Itoa(ListResourceVersion-1-i%997) + `",`)
	b.WriteString(`"creationTimestamp":"2024-01-01T00:00:00Z","labels":{"app":"lab","shard":"`)
	b.WriteString(strconv.Itoa(i%16) + `"},"annotations":{"lab.example/padding":"` + padding + `"}},`)
	b.WriteString(fmt.Sprintf(`"spec":{"nodeName":"node-%02d",`, i%50))
	b.WriteString(`"containers":[{"name":"app","image":"registry.k8s.io/pause:3.9"}]},`)
	b.WriteString(fmt.Sprintf(`"status":{"phase":"Running","podIP":"10.%d.%d.%d"}}`, (i>>16)&255, (i>>8)&255, i&255))
	return []byte(b.String())
}

// PodJSON is pod i of ns as compact JSON, padded to exactly sizeBytes (or minimal if smaller).
func PodJSON(ns string, i, sizeBytes int) []byte {
	base := podBytes(ns, i, "")
	pad := sizeBytes - len(base)
	if pad <= 0 {
		return base
	}
	start := (i * 7919) % 4096
	padding := make([]byte, pad)
	for j := range padding {
		padding[j] = padDigest[(start+j)%len(padDigest)]
	}
	return podBytes(ns, i, string(padding))
}

// EncodeContinue is the continue token that resumes a List at item index start: unpadded
// URL-safe base64 of the JSON text Python's json.dumps writes for the token object.
func EncodeContinue(start int) string {
	raw := fmt.Sprintf(`{"v": "%s", "rv": %d, "start": %d}`, tokenVersion, ListResourceVersion, start)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// DecodeContinue is the item index a continue token points at.
func DecodeContinue(token string) (int, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(token, "="))
	if err != nil {
		return 0, fmt.Errorf("%w: malformed continue token: %v", ErrBadList, err)
	}
	var obj struct {
		V     *string          `json:"v"`
		Start *json.RawMessage `json:"start"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return 0, fmt.Errorf("%w: malformed continue token: %v", ErrBadList, err)
	}
	if obj.V == nil || obj.Start == nil {
		return 0, fmt.Errorf("%w: malformed continue token", ErrBadList)
	}
	start, err := strconv.Atoi(string(*obj.Start)) // an integer literal, not 1.0 or "1"
	if err != nil || *obj.V != tokenVersion || start < 0 {
		return 0, fmt.Errorf("%w: malformed continue token", ErrBadList)
	}
	return start, nil
}

// Page is one page of a List: item index range [Start, End) and the token for the next page.
type Page struct {
	Start, End int
	Continue   string // "" on the last page
	Remaining  int    // items after this page
}

// PlanPage says which items one List response carries; limit 0 means all remaining.
func PlanPage(total, limit int, continueToken string) (Page, error) {
	if limit < 0 {
		return Page{}, fmt.Errorf("%w: limit must be >= 0", ErrBadList)
	}
	start := 0
	if continueToken != "" {
		var err error
		if start, err = DecodeContinue(continueToken); err != nil {
			return Page{}, err
		}
	}
	if start > total {
		return Page{}, fmt.Errorf("%w: continue token beyond the end of the list", ErrBadList)
	}
	end := total
	if limit != 0 && start+limit < total {
		end = start + limit
	}
	p := Page{Start: start, End: end, Remaining: total - end}
	if p.Remaining > 0 {
		p.Continue = EncodeContinue(end)
	}
	return p, nil
}

// ListJSON is the PodList of one page.
func ListJSON(ns string, p Page, podSizeBytes int) []byte {
	meta := `{"resourceVersion":"` + strconv.Itoa(ListResourceVersion) + `"`
	if p.Continue != "" {
		meta += `,"continue":"` + p.Continue + `","remainingItemCount":` + strconv.Itoa(p.Remaining)
	}
	out := []byte(`{"kind":"PodList","apiVersion":"v1","metadata":` + meta + `},"items":[`)
	for i := p.Start; i < p.End; i++ {
		if i != p.Start {
			out = append(out, ',')
		}
		out = append(out, PodJSON(ns, i, podSizeBytes)...)
	}
	return append(out, ']', '}')
}

// WatchEvent is one watch event as a JSON line: ADDED first, then MODIFIED, with the lab's
// stamps (the stream it is sent on, its sequence number, CLOCK_MONOTONIC ns when sent).
func WatchEvent(ns string, seq int64, stream int64, sentNs int64) []byte {
	kind := "MODIFIED"
	if seq == 0 {
		kind = "ADDED"
	}
	return []byte(`{"type":"` + kind + `","object":{"kind":"Pod","apiVersion":"v1","metadata":` +
		`{"name":"pod-00000","namespace":"` + ns + `","resourceVersion":"` +
		strconv.FormatInt(ListResourceVersion+seq+1, 10) + `"},"status":{"phase":"Running"}},` +
		`"lab":{"stream":` + strconv.FormatInt(stream, 10) + `,"seq":` + strconv.FormatInt(seq, 10) +
		`,"sent_ns":` + strconv.FormatInt(sentNs, 10) + "}}\n")
}
