// Package h2stream reads the HTTP/2 stream id of a request served by golang.org/x/net/http2.
//
// net/http gives handlers no stream id, but the watch route stamps it into every event (as the
// reference server does). x/net/http2's ResponseWriter holds it in unexported fields
// (responseWriter.rws.stream.id); reflection may read, never write, such fields. The layout is
// that of the Debian golang-golang-x-net-dev the build uses; if it ever differs, ID reports
// false and the route sends -1.
package h2stream

import (
	"net/http"
	"reflect"
)

// ID is the HTTP/2 stream id behind w, when w is x/net/http2's ResponseWriter.
func ID(w http.ResponseWriter) (id int64, ok bool) {
	defer func() {
		if recover() != nil {
			id, ok = 0, false
		}
	}()
	v := reflect.ValueOf(w)
	if v.Kind() != reflect.Ptr || v.Elem().Type().PkgPath() != "golang.org/x/net/http2" {
		return 0, false
	}
	for _, name := range []string{"rws", "stream"} {
		v = v.Elem().FieldByName(name)
		if !v.IsValid() || v.Kind() != reflect.Ptr || v.IsNil() {
			return 0, false
		}
	}
	field := v.Elem().FieldByName("id")
	if !field.IsValid() || field.Kind() != reflect.Uint32 {
		return 0, false
	}
	return int64(field.Uint()), true
}
