package plugin

import (
	"bytes"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// DecodeConfig decodes a msgpack config from the Nomad client (SetConfig's
// plugin config or a task's DriverConfig) into out, a pointer to a struct whose
// fields carry `codec:"name"` tags (untagged fields use their Go name).
//
// The client encodes the config with go-cty against the value's own type, so
// numbers arrive in any msgpack int or uint width, as float32 or float64, or as
// decimal strings when too large; all of them decode into any numeric field
// that can hold the value exactly. `any` fields receive the plain value (maps,
// slices, string, bool, int64, uint64 or float64). Nil decodes to the zero
// value; keys absent from the data leave the field as it was, so defaults can
// be set before decoding. A time.Duration field also accepts a duration string
// such as "30s". Empty data is a no-op. Errors name the field path, e.g.
// `pool.python.size: cannot decode string "x" as int`. Hostile data is
// refused before decoding: maps and lists nested deeper than MaxConfigDepth,
// and values or containers declaring more bytes or entries than data holds.
func DecodeConfig(data []byte, out any) error {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode config: out must be a non-nil pointer, got %T", out)
	}
	if len(data) == 0 {
		return nil
	}
	if err := precheck(data, MaxConfigDepth); err != nil {
		return err
	}
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	src, err := dec.DecodeInterface()
	if err != nil {
		return fmt.Errorf("decode config: invalid msgpack: %w", err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("decode config: %d trailing bytes after the config value", r.Len())
	}
	if src == nil {
		return nil
	}
	return assign(rv.Elem(), src, "")
}

var durationType = reflect.TypeOf(time.Duration(0))

// assign stores src, a value produced by msgpack's generic decoder, into v.
func assign(v reflect.Value, src any, path string) error {
	if src == nil {
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	switch v.Kind() {
	case reflect.Interface:
		if v.NumMethod() != 0 {
			return mismatch(path, src, v.Type())
		}
		v.Set(reflect.ValueOf(plain(src)))
		return nil
	case reflect.Pointer:
		elem := reflect.New(v.Type().Elem())
		if err := assign(elem.Elem(), src, path); err != nil {
			return err
		}
		v.Set(elem)
		return nil
	case reflect.Bool:
		b, ok := src.(bool)
		if !ok {
			return mismatch(path, src, v.Type())
		}
		v.SetBool(b)
		return nil
	case reflect.String:
		switch s := src.(type) {
		case string:
			v.SetString(s)
		case []byte:
			v.SetString(string(s))
		default:
			return mismatch(path, src, v.Type())
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return assignNumber(v, src, path)
	case reflect.Struct:
		m, ok := src.(map[string]any)
		if !ok {
			return mismatch(path, src, v.Type())
		}
		return assignStruct(v, m, path)
	case reflect.Map:
		m, ok := src.(map[string]any)
		if !ok || v.Type().Key().Kind() != reflect.String {
			return mismatch(path, src, v.Type())
		}
		out := reflect.MakeMapWithSize(v.Type(), len(m))
		for k, val := range m {
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := assign(elem, val, join(path, k)); err != nil {
				return err
			}
			out.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), elem)
		}
		v.Set(out)
		return nil
	case reflect.Slice:
		if b, ok := src.([]byte); ok && v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes(append([]byte(nil), b...))
			return nil
		}
		items, ok := src.([]any)
		if !ok {
			return mismatch(path, src, v.Type())
		}
		out := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, item := range items {
			if err := assign(out.Index(i), item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	default:
		return fmt.Errorf("%s: unsupported field type %s", pathName(path), v.Type())
	}
}

// assignStruct fills the fields named in m; keys without a field are ignored
// because the schema, not the struct, is the authority on what may appear.
func assignStruct(v reflect.Value, m map[string]any, path string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("codec"), ",")
		if name == "-" {
			continue
		}
		if name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct {
			if err := assignStruct(v.Field(i), m, path); err != nil {
				return err
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		val, ok := m[name]
		if !ok {
			continue
		}
		if err := assign(v.Field(i), val, join(path, name)); err != nil {
			return err
		}
	}
	return nil
}

// assignNumber accepts every numeric msgpack form and decimal strings, and
// refuses anything that would not fit exactly.
func assignNumber(v reflect.Value, src any, path string) error {
	if s, ok := src.(string); ok && v.Type() == durationType {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			d, derr := time.ParseDuration(s)
			if derr != nil {
				return fmt.Errorf("%s: cannot decode string %q as a duration: %w", pathName(path), s, derr)
			}
			v.SetInt(int64(d))
			return nil
		}
	}
	n, ok := toBigFloat(src)
	if !ok {
		return mismatch(path, src, v.Type())
	}
	switch v.Kind() {
	case reflect.Float32, reflect.Float64:
		f, _ := n.Float64()
		if v.OverflowFloat(f) {
			return fmt.Errorf("%s: %s overflows %s", pathName(path), describe(src), v.Type())
		}
		v.SetFloat(f)
		return nil
	}
	if n.Acc() != big.Exact && n.MantExp(nil) > 64 { // a decimal string beyond 512 bits
		return fmt.Errorf("%s: %s overflows %s", pathName(path), describe(src), v.Type())
	}
	// An inexact value is a decimal string that rounded (or underflowed to 0)
	// on parsing, so it was not the integer it now looks like.
	if !n.IsInt() || n.Acc() != big.Exact || underflowed(src, n) {
		return fmt.Errorf("%s: cannot decode non-integral %s as %s", pathName(path), describe(src), v.Type())
	}
	i, _ := n.Int(nil)
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if !i.IsInt64() || v.OverflowInt(i.Int64()) {
			return fmt.Errorf("%s: %s overflows %s", pathName(path), describe(src), v.Type())
		}
		v.SetInt(i.Int64())
	default:
		if !i.IsUint64() || v.OverflowUint(i.Uint64()) {
			return fmt.Errorf("%s: %s overflows %s", pathName(path), describe(src), v.Type())
		}
		v.SetUint(i.Uint64())
	}
	return nil
}

// toBigFloat converts any numeric form exactly; big.Float keeps both 2^64-1
// and 0.1 as they were sent.
func toBigFloat(src any) (*big.Float, bool) {
	n := new(big.Float).SetPrec(0)
	switch x := src.(type) {
	case int8:
		return n.SetInt64(int64(x)), true
	case int16:
		return n.SetInt64(int64(x)), true
	case int32:
		return n.SetInt64(int64(x)), true
	case int64:
		return n.SetInt64(x), true
	case uint8:
		return n.SetUint64(uint64(x)), true
	case uint16:
		return n.SetUint64(uint64(x)), true
	case uint32:
		return n.SetUint64(uint64(x)), true
	case uint64:
		return n.SetUint64(x), true
	case float32:
		return floatToBig(float64(x))
	case float64:
		return floatToBig(x)
	case string:
		f, _, err := big.ParseFloat(strings.TrimSpace(x), 10, 512, big.ToNearestEven)
		if err != nil {
			return nil, false
		}
		return f, true
	}
	return nil, false
}

// underflowed reports a decimal string such as "1e-999999999" that parsed to
// zero (big.Float reports that as exact) although its digits are not all zero.
func underflowed(src any, n *big.Float) bool {
	s, ok := src.(string)
	if !ok || n.Sign() != 0 {
		return false
	}
	mant, _, _ := strings.Cut(strings.ToLower(s), "e")
	return strings.ContainsAny(mant, "123456789")
}

func floatToBig(f float64) (*big.Float, bool) {
	if math.IsNaN(f) {
		return nil, false
	}
	return new(big.Float).SetFloat64(f), true
}

// plain normalises a generic msgpack value for an `any` field: integers become
// int64 (uint64 when too large), floats float64.
func plain(src any) any {
	switch x := src.(type) {
	case int8:
		return int64(x)
	case int16:
		return int64(x)
	case int32:
		return int64(x)
	case uint8:
		return int64(x)
	case uint16:
		return int64(x)
	case uint32:
		return int64(x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
		return x
	case float32:
		return float64(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, v := range x {
			out[k] = plain(v)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, v := range x {
			out[i] = plain(v)
		}
		return out
	}
	return src
}

func mismatch(path string, src any, t reflect.Type) error {
	return fmt.Errorf("%s: cannot decode %s as %s", pathName(path), describe(src), t)
}

func describe(src any) string {
	switch x := src.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case bool:
		return fmt.Sprintf("bool %v", x)
	case float32, float64:
		return fmt.Sprintf("number %v", x)
	case int8, int16, int32, int64, uint8, uint16, uint32, uint64:
		return fmt.Sprintf("number %d", x)
	case map[string]any:
		return "map"
	case []any:
		return "list"
	case []byte:
		return "bytes"
	}
	return fmt.Sprintf("%T", src)
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
