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

// NewBlockMap returns a spec for labelled blocks decoded into a map, one map
// level per label (`pool "python" { ... }` with labels ["name"]).
func NewBlockMap(name string, labels []string, nested *Spec) *Spec {
	return &Spec{Block: &Spec_BlockMap{BlockMap: &BlockMap{Name: name, Labels: labels, Nested: nested}}}
}
