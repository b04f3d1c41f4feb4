package plugin

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// DecodeConfig decodes a msgpack config from the Nomad client (SetConfig's
// plugin block or a task's DriverConfig) into out, a pointer to a struct.
//
// The client encodes the HCL value with go-cty's msgpack encoder: objects and
// maps as maps with string keys, lists as arrays, strings as str, null as nil.
// DecodeConfig fills what a schema of strings, bools, lists and blocks needs:
// struct fields tagged `codec:"name"` (untagged: the Go name; an untagged
// embedded struct's fields are the outer struct's, see field), string-keyed
// maps, slices, strings and bools. Numbers are left out on purpose: cty sends
// one in whichever of several encodings fits its value, while an attribute
// declared as a string receives it as decimal text that the driver validates
// itself. A field of any other type fails with an error naming it.
//
// Nil zeroes a field; keys absent from the data leave the field as it was, so
// defaults can be set before decoding; keys without a field are skipped,
// because the schema, not the struct, is the authority on what may appear.
// Empty data is a no-op. Errors name the field path, e.g.
// `pool.python.size: cannot decode number 3 as string`. Data over
// MaxConfigSize or nested deeper than MaxConfigDepth is refused before
// anything is decoded (see scan).
func DecodeConfig(data []byte, out any) error {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode config: out must be a non-nil pointer, got %T", out)
	}
	if len(data) == 0 {
		return nil
	}
	if err := scan(data); err != nil {
		return err
	}
	if data[0] == msgpcode.Nil { // a config that is null as a whole: no keys, nothing to zero
		return nil
	}
	return decodeValue(msgpack.NewDecoder(bytes.NewReader(data)), rv.Elem(), "")
}

// decodeValue reads the next value into v. The library reads the wire format;
// this walk matches it to v's type so that an error can say where it happened
// (the library's own struct decoding, with the codec tag, says only
// "msgpack: invalid code=91 decoding string/bytes length").
func decodeValue(d *msgpack.Decoder, v reflect.Value, path string) error {
	c, err := d.PeekCode()
	if err != nil {
		return invalid(err)
	}
	k := v.Kind()
	if k != reflect.String && k != reflect.Bool && k != reflect.Slice && k != reflect.Struct &&
		(k != reflect.Map || v.Type().Key().Kind() != reflect.String) {
		return fmt.Errorf("%s: unsupported field type %s", pathName(path), v.Type())
	}
	if c == msgpcode.Nil {
		v.SetZero()
		return invalid(d.Skip())
	}
	switch {
	case k == reflect.String && msgpcode.IsString(c):
		s, err := d.DecodeString()
		v.SetString(s)
		return invalid(err)
	case k == reflect.Bool && (c == msgpcode.True || c == msgpcode.False):
		b, err := d.DecodeBool()
		v.SetBool(b)
		return invalid(err)
	case k == reflect.Slice && isArray(c):
		n, err := d.DecodeArrayLen()
		if err != nil {
			return invalid(err)
		}
		s := reflect.MakeSlice(v.Type(), n, n) // n is at most the bytes left (scan)
		for i := range n {
			if err := decodeValue(d, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case k == reflect.Map && isMap(c):
		m := reflect.MakeMap(v.Type())
		err := decodeEntries(d, path, func(key string) error {
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := decodeValue(d, elem, join(path, key)); err != nil {
				return err
			}
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), elem)
			return nil
		})
		if err == nil {
			v.Set(m)
		}
		return err
	case k == reflect.Struct && isMap(c):
		return decodeEntries(d, path, func(key string) error {
			if f, ok := field(v, key); ok {
				return decodeValue(d, f, join(path, key))
			}
			return invalid(d.Skip())
		})
	}
	return fmt.Errorf("%s: cannot decode %s as %s", pathName(path), describe(d, c), expected(k))
}

// decodeEntries reads a map's entries, handing each key to entry, which reads
// the value.
func decodeEntries(d *msgpack.Decoder, path string, entry func(key string) error) error {
	n, err := d.DecodeMapLen()
	if err != nil {
		return invalid(err)
	}
	for range n {
		c, err := d.PeekCode()
		if err != nil {
			return invalid(err)
		}
		if !msgpcode.IsString(c) {
			return fmt.Errorf("%s: cannot decode %s as a key", pathName(path), describe(d, c))
		}
		key, err := d.DecodeString()
		if err != nil {
			return invalid(err)
		}
		if err := entry(key); err != nil {
			return err
		}
	}
	return nil
}

// field returns the exported field of struct v that key names. The fields of
// an anonymous struct field without a codec tag count as v's own, as
// encoding/json promotes them, so a block's shared attributes can be one
// embedded struct (nomadapi.Block). v's own fields come first: an outer
// field shadows an embedded one of the same name. Embedding is part of the
// type, so this recursion is bounded by the type, not by the data.
func field(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	var embedded []int
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("codec"), ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			embedded = append(embedded, i)
			continue
		}
		if name == "" {
			name = f.Name
		}
		if f.IsExported() && name != "-" && name == key {
			return v.Field(i), true
		}
	}
	for _, i := range embedded {
		if f, ok := field(v.Field(i), key); ok {
			return f, true
		}
	}
	return reflect.Value{}, false
}

// describe reads the value starting with code c and says what it is, for an
// error: decoding stops there.
func describe(d *msgpack.Decoder, c byte) string {
	switch {
	case c == msgpcode.Nil:
		return "nil"
	case isMap(c):
		return "map"
	case isArray(c):
		return "list"
	case msgpcode.IsBin(c):
		return "bytes"
	case msgpcode.IsExt(c):
		return "extension"
	case msgpcode.IsString(c):
		s, _ := d.DecodeString()
		return fmt.Sprintf("string %.40q", s)
	case c == msgpcode.True || c == msgpcode.False:
		return fmt.Sprintf("bool %t", c == msgpcode.True)
	}
	n, err := d.DecodeInterfaceLoose() // every other code is a number
	if err != nil {
		return fmt.Sprintf("code %#x", c)
	}
	return fmt.Sprintf("number %v", n)
}

func expected(k reflect.Kind) string {
	switch k {
	case reflect.Slice:
		return "list"
	case reflect.Map, reflect.Struct:
		return "map"
	}
	return k.String()
}

func isMap(c byte) bool {
	return msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
}

func isArray(c byte) bool {
	return msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
}

// invalid wraps an error of the msgpack library. After scan none is expected.
func invalid(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("decode config: invalid msgpack: %w", err)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func pathName(path string) string {
	if path == "" {
		return "config"
	}
	return path
}
