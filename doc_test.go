package shutdown

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// TestExportedIdentifiersDocumented checks what STYLE 11 asks of the
// package's own files (for every platform, not only the one running the
// test): each exported type, function, method, constant and variable has a
// doc comment that starts with its name (or, in a group, the group has
// one) and ends with a period, and the package doc does too.
func TestExportedIdentifiersDocumented(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	pkgDoc := false
	checked := 0
	for _, de := range entries {
		name := de.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if f.Doc != nil {
			pkgDoc = true
			checkDoc(t, fset, f.Package, "package", "Package shutdown", f.Doc)
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() || (d.Recv != nil && !exportedRecv(d.Recv)) {
					continue
				}
				checked++
				checkDoc(t, fset, d.Pos(), d.Name.Name, d.Name.Name, d.Doc)
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					var names []*ast.Ident
					var doc *ast.CommentGroup
					switch s := spec.(type) {
					case *ast.TypeSpec:
						names, doc = []*ast.Ident{s.Name}, s.Doc
					case *ast.ValueSpec:
						names, doc = s.Names, s.Doc
					}
					for _, n := range names {
						if !n.IsExported() {
							continue
						}
						checked++
						switch {
						case doc != nil:
							checkDoc(t, fset, n.Pos(), n.Name, n.Name, doc)
						case d.Lparen.IsValid() && d.Doc != nil:
							checkDoc(t, fset, n.Pos(), n.Name, "", d.Doc) // documented as a group
						default:
							checkDoc(t, fset, n.Pos(), n.Name, n.Name, d.Doc)
						}
					}
				}
			}
		}
	}
	if !pkgDoc {
		t.Error("no file has a package doc comment")
	}
	if checked < 30 {
		t.Errorf("checked %d exported identifiers, want at least 30: is the parser reading the package?", checked)
	}
}

// exportedRecv reports whether a method's receiver type is exported, so
// its method shows in the package's documentation.
func exportedRecv(recv *ast.FieldList) bool {
	typ := recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}

func checkDoc(t *testing.T, fset *token.FileSet, pos token.Pos, what, prefix string, doc *ast.CommentGroup) {
	t.Helper()
	if doc == nil {
		t.Errorf("%v: %s has no doc comment", fset.Position(pos), what)
		return
	}
	text := strings.TrimSpace(doc.Text())
	if !strings.HasSuffix(text, ".") {
		t.Errorf("%v: the doc comment of %s does not end with a period", fset.Position(pos), what)
	}
	// A doc comment starts with the name, perhaps after an article.
	first := strings.TrimPrefix(strings.TrimPrefix(text, "A "), "An ")
	if prefix != "" && !strings.HasPrefix(first, prefix) {
		t.Errorf("%v: the doc comment of %s starts %q, want the name first", fset.Position(pos), what, firstLine(text))
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
