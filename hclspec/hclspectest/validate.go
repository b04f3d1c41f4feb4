// Package hclspectest checks HCL schemas the way the Nomad client does before
// it uses them. A schema is fixed at build time, so its check belongs in the
// driver's tests, not in the plugin.
package hclspectest

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/agentkernel/agentkernel-pool/hclspec"
)

// Validate checks spec against the rules the Nomad client applies when it
// converts a schema: the root is an Object, every node sets exactly one kind,
// names are present where no Object key implies them (inside Default, Array and
// nested block specs), type expressions parse, block maps have labels and block
// specs have a nested spec. The client rejects a bad ConfigSchema by refusing to
// start the agent and a bad TaskConfigSchema by failing every task, so drivers
// call this from their tests. Errors name the path to the offending node.
func Validate(spec *hclspec.Spec) error {
	if spec == nil {
		return errors.New("spec: nil spec (the root must be an object)")
	}
	if _, ok := spec.GetBlock().(*hclspec.Spec_Object); !ok {
		return fmt.Errorf("spec: the root must be an object, got %s", kind(spec))
	}
	var errs []error
	validate(spec, "spec", "", &errs)
	return errors.Join(errs...)
}

// validate checks one node; implied is the Object key that names it, "" when
// the node is not a direct child of an Object.
func validate(s *hclspec.Spec, path, implied string, errs *[]error) {
	fail := func(format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	needName := func(kindName, name string) {
		if name == "" && implied == "" {
			fail("%s spec is missing a name (only direct children of an object take the key as their name)", kindName)
		}
	}
	nested := func(kindName string, n *hclspec.Spec) {
		if n == nil {
			fail("%s spec has no nested spec", kindName)
			return
		}
		validate(n, path+".nested", "", errs)
	}
	if s == nil {
		fail("nil spec")
		return
	}
	switch b := s.GetBlock().(type) {
	case *hclspec.Spec_Object:
		keys := make([]string, 0, len(b.Object.GetAttributes()))
		for k := range b.Object.GetAttributes() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if k == "" {
				fail("object has an empty key")
				continue
			}
			validate(b.Object.GetAttributes()[k], path+"."+k, k, errs)
		}
	case *hclspec.Spec_Array:
		for i, v := range b.Array.GetValues() {
			validate(v, fmt.Sprintf("%s[%d]", path, i), "", errs)
		}
	case *hclspec.Spec_Attr:
		needName("attribute", b.Attr.GetName())
		if err := checkTypeExpr(b.Attr.GetType()); err != nil {
			fail("attribute: %v", err)
		}
	case *hclspec.Spec_BlockValue:
		needName("block", b.BlockValue.GetName())
		nested("block", b.BlockValue.GetNested())
	case *hclspec.Spec_BlockAttrs:
		needName("block_attrs", b.BlockAttrs.GetName())
		if err := checkTypeExpr(b.BlockAttrs.GetType()); err != nil {
			fail("block_attrs: %v", err)
		}
	case *hclspec.Spec_BlockList:
		needName("block_list", b.BlockList.GetName())
		checkItems(b.BlockList.GetMinItems(), b.BlockList.GetMaxItems(), fail)
		nested("block_list", b.BlockList.GetNested())
	case *hclspec.Spec_BlockSet:
		needName("block_set", b.BlockSet.GetName())
		checkItems(b.BlockSet.GetMinItems(), b.BlockSet.GetMaxItems(), fail)
		nested("block_set", b.BlockSet.GetNested())
		if usesAny(b.BlockSet.GetNested()) {
			fail("block_set nests an `any` type: Nomad's HCL decoder panics on it, which kills the agent")
		}
	case *hclspec.Spec_BlockMap:
		needName("block_map", b.BlockMap.GetName())
		if len(b.BlockMap.GetLabels()) == 0 {
			fail("block_map spec needs at least one label")
		}
		for i, l := range b.BlockMap.GetLabels() {
			if l == "" {
				fail("block_map label %d is empty", i)
			}
		}
		nested("block_map", b.BlockMap.GetNested())
		if usesAny(b.BlockMap.GetNested()) {
			fail("block_map nests an `any` type: Nomad's HCL decoder panics on it, which kills the agent")
		}
	case *hclspec.Spec_Default:
		if b.Default.GetPrimary() == nil {
			fail("default spec has no primary spec")
		} else {
			validate(b.Default.GetPrimary(), path+".primary", "", errs)
		}
		if b.Default.GetDefault() == nil {
			fail("default spec has no default spec")
		} else {
			validate(b.Default.GetDefault(), path+".default", "", errs)
		}
	case *hclspec.Spec_Literal:
		if err := checkLiteral(b.Literal.GetValue()); err != nil {
			fail("literal: %v", err)
		}
	default:
		fail("spec sets no kind (exactly one of object, array, attr, block, block_attrs, block_list, block_set, block_map, default, literal)")
	}
}

func checkItems(minItems, maxItems uint64, fail func(string, ...any)) {
	if maxItems != 0 && minItems > maxItems {
		fail("min_items %d is greater than max_items %d", minItems, maxItems)
	}
}

// checkLiteral catches the literal mistakes a Go author makes: an empty value, or
// a bare word meant as a string (HCL wants `"\"text\""`). It balances brackets
// and quotes but does not evaluate the expression.
func checkLiteral(v string) error {
	v = strings.TrimSpace(v)
	if v == "" {
		return errors.New("empty value (a string literal needs HCL quotes, e.g. `\"\\\"text\\\"\"`)")
	}
	var stack []byte
	inStr := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			open := map[byte]byte{')': '(', ']': '[', '}': '{'}[c]
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return fmt.Errorf("unbalanced %q in %q", c, v)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if inStr {
		return fmt.Errorf("unterminated string in %q", v)
	}
	if len(stack) != 0 {
		return fmt.Errorf("unclosed %q in %q", stack[len(stack)-1], v)
	}
	return nil
}

func kind(s *hclspec.Spec) string {
	switch s.GetBlock().(type) {
	case *hclspec.Spec_Object:
		return "object"
	case *hclspec.Spec_Array:
		return "array"
	case *hclspec.Spec_Attr:
		return "attr"
	case *hclspec.Spec_BlockValue:
		return "block"
	case *hclspec.Spec_BlockAttrs:
		return "block_attrs"
	case *hclspec.Spec_BlockList:
		return "block_list"
	case *hclspec.Spec_BlockSet:
		return "block_set"
	case *hclspec.Spec_BlockMap:
		return "block_map"
	case *hclspec.Spec_Default:
		return "default"
	case *hclspec.Spec_Literal:
		return "literal"
	default:
		return "nothing"
	}
}

var anyType = regexp.MustCompile(`\bany\b`)

// usesAny reports whether a spec's types mention `any` anywhere below it.
func usesAny(s *hclspec.Spec) bool {
	if s == nil {
		return false
	}
	switch b := s.GetBlock().(type) {
	case *hclspec.Spec_Object:
		for _, v := range b.Object.GetAttributes() {
			if usesAny(v) {
				return true
			}
		}
	case *hclspec.Spec_Array:
		for _, v := range b.Array.GetValues() {
			if usesAny(v) {
				return true
			}
		}
	case *hclspec.Spec_Attr:
		return anyType.MatchString(b.Attr.GetType())
	case *hclspec.Spec_BlockAttrs:
		return anyType.MatchString(b.BlockAttrs.GetType())
	case *hclspec.Spec_BlockValue:
		return usesAny(b.BlockValue.GetNested())
	case *hclspec.Spec_BlockList:
		return usesAny(b.BlockList.GetNested())
	case *hclspec.Spec_BlockSet:
		return usesAny(b.BlockSet.GetNested())
	case *hclspec.Spec_BlockMap:
		return usesAny(b.BlockMap.GetNested())
	case *hclspec.Spec_Default:
		return usesAny(b.Default.GetPrimary()) || usesAny(b.Default.GetDefault())
	}
	return false
}
