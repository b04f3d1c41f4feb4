package hclspectest

import (
	"fmt"
	"strings"
	"unicode"
)

// checkTypeExpr reports whether expr is a type expression the Nomad client can
// evaluate: string, number, bool, any, list(T), set(T), map(T),
// object({name = T, ...}) and tuple([T, ...]). A bad one fails the conversion of
// the whole schema, which for ConfigSchema stops the Nomad agent.
func checkTypeExpr(expr string) error {
	p := &typeParser{src: expr}
	p.skipSpace()
	if p.done() {
		return fmt.Errorf("empty type expression")
	}
	if err := p.typ(); err != nil {
		return fmt.Errorf("type expression %q: %w", expr, err)
	}
	p.skipSpace()
	if !p.done() {
		return fmt.Errorf("type expression %q: unexpected %q at offset %d", expr, p.src[p.pos:], p.pos)
	}
	return nil
}

type typeParser struct {
	src string
	pos int
}

func (p *typeParser) done() bool { return p.pos >= len(p.src) }

func (p *typeParser) skipSpace() {
	for !p.done() && unicode.IsSpace(rune(p.src[p.pos])) {
		p.pos++
	}
}

// expect consumes c after optional white space.
func (p *typeParser) expect(c byte) error {
	p.skipSpace()
	if p.done() || p.src[p.pos] != c {
		return fmt.Errorf("expected %q at offset %d", c, p.pos)
	}
	p.pos++
	return nil
}

// peek reports whether the next non-space byte is c, without consuming it.
func (p *typeParser) peek(c byte) bool {
	p.skipSpace()
	return !p.done() && p.src[p.pos] == c
}

func (p *typeParser) ident() string {
	p.skipSpace()
	start := p.pos
	for !p.done() {
		c := rune(p.src[p.pos])
		if !unicode.IsLetter(c) && !unicode.IsDigit(c) && c != '_' && c != '-' {
			break
		}
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *typeParser) typ() error {
	name := p.ident()
	switch name {
	case "string", "number", "bool", "any":
		return nil
	case "list", "set", "map":
		if err := p.expect('('); err != nil {
			return err
		}
		if err := p.typ(); err != nil {
			return err
		}
		return p.expect(')')
	case "object":
		return p.objectType()
	case "tuple":
		return p.tupleType()
	case "":
		return fmt.Errorf("expected a type at offset %d", p.pos)
	default:
		return fmt.Errorf("unknown type %q (want string, number, bool, any, list, set, map, object or tuple)", name)
	}
}

// objectType parses ({k = T, ...}); entries may be separated by commas or new lines.
func (p *typeParser) objectType() error {
	if err := p.expect('('); err != nil {
		return err
	}
	if err := p.expect('{'); err != nil {
		return err
	}
	for !p.peek('}') {
		if err := p.objectKey(); err != nil {
			return err
		}
		p.skipSpace()
		if p.done() || (p.src[p.pos] != '=' && p.src[p.pos] != ':') {
			return fmt.Errorf("expected '=' after object attribute name at offset %d", p.pos)
		}
		p.pos++
		if err := p.typ(); err != nil {
			return err
		}
		if p.peek(',') {
			p.pos++
		}
	}
	p.pos++ // '}'
	return p.expect(')')
}

func (p *typeParser) objectKey() error {
	p.skipSpace()
	if !p.done() && p.src[p.pos] == '"' {
		end := strings.IndexByte(p.src[p.pos+1:], '"')
		if end <= 0 {
			return fmt.Errorf("bad quoted object attribute name at offset %d", p.pos)
		}
		p.pos += end + 2
		return nil
	}
	if p.ident() == "" {
		return fmt.Errorf("expected an object attribute name at offset %d", p.pos)
	}
	return nil
}

// tupleType parses ([T, ...]).
func (p *typeParser) tupleType() error {
	if err := p.expect('('); err != nil {
		return err
	}
	if err := p.expect('['); err != nil {
		return err
	}
	for !p.peek(']') {
		if err := p.typ(); err != nil {
			return err
		}
		if !p.peek(',') {
			break
		}
		p.pos++
	}
	if err := p.expect(']'); err != nil {
		return err
	}
	return p.expect(')')
}
