package hclspec

// NewObject returns an Object spec; each key names the decoded property and is the
// implied name of its direct child Attr or Block spec.
func NewObject(attrs map[string]*Spec) *Spec {
	return &Spec{Block: &Spec_Object{Object: &Object{Attributes: attrs}}}
}

// NewAttr returns an attribute spec. typ is an HCL type expression such as
// "string", "number", "bool", "any" or "list(string)".
func NewAttr(name, typ string, required bool) *Spec {
	return &Spec{Block: &Spec_Attr{Attr: &Attr{Name: name, Type: typ, Required: required}}}
}

// NewBlock returns a spec for a single block decoded with nested.
func NewBlock(name string, required bool, nested *Spec) *Spec {
	return &Spec{Block: &Spec_BlockValue{BlockValue: &Block{Name: name, Required: required, Nested: nested}}}
}

// NewBlockAttrs returns a spec for a block whose attributes decode into a map of elemType.
func NewBlockAttrs(name, elemType string, required bool) *Spec {
	return &Spec{Block: &Spec_BlockAttrs{BlockAttrs: &BlockAttrs{Name: name, Type: elemType, Required: required}}}
}

// NewBlockList returns a spec for a repeated block decoded into a list.
func NewBlockList(name string, nested *Spec) *Spec {
	return &Spec{Block: &Spec_BlockList{BlockList: &BlockList{Name: name, Nested: nested}}}
}

// NewBlockSet returns a spec for a repeated block decoded into a set.
func NewBlockSet(name string, nested *Spec) *Spec {
	return &Spec{Block: &Spec_BlockSet{BlockSet: &BlockSet{Name: name, Nested: nested}}}
}

// NewBlockMap returns a spec for labelled blocks decoded into a map, one map
// level per label (`pool "python" { ... }` with labels ["name"]).
func NewBlockMap(name string, labels []string, nested *Spec) *Spec {
	return &Spec{Block: &Spec_BlockMap{BlockMap: &BlockMap{Name: name, Labels: labels, Nested: nested}}}
}

// NewDefault returns a spec that yields primary's value, or def's when primary is
// null. Children of a Default get no implied name: give primary an explicit one.
func NewDefault(primary, def *Spec) *Spec {
	return &Spec{Block: &Spec_Default{Default: &Default{Primary: primary, Default: def}}}
}

// NewLiteral returns a constant spec; value is HCL native syntax (`true`, `5`,
// `"\"text\""`, `[]`).
func NewLiteral(value string) *Spec {
	return &Spec{Block: &Spec_Literal{Literal: &Literal{Value: value}}}
}

// NewArray returns a spec whose values decode into a tuple.
func NewArray(values []*Spec) *Spec {
	return &Spec{Block: &Spec_Array{Array: &Array{Values: values}}}
}
