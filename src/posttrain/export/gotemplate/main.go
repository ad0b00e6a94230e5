// Command gotemplate renders a Modelfile TEMPLATE the way Ollama does, for posttrain's export verification: the
// prompt Ollama would send the model, to compare with the tokenizer's Jinja chat template byte for byte.
//
// Input on stdin, one JSON object:
//
//	{"template": "<Go template>", "mode": "chat", "system": "<Modelfile SYSTEM>",
//	 "cases": [{"messages": [{"role": "user", "content": "hi"}], "think": null}, ...]}
//
// mode "chat" (the default) reproduces Ollama's chat handling before and around template execution, ported from
// github.com/ollama/ollama (MIT licence) at commit fb30760996871fa9460115c753afd2c60d4ab0f7:
//
//   - server/routes.go, (*Server).ChatHandler (lines 2616-2660): a model whose template infers thinking tags gets
//     Think=true when the request does not set it; the Modelfile SYSTEM is prepended as a system message only when
//     the request's first message is not a system message.
//   - template/template.go, Parse (lines 154-176): a template that mentions neither .Messages nor .Response gets
//     {{ .Response }} appended; parsed with Option("missingkey=zero") and Ollama's functions.
//   - template/template.go, (*Template).Execute (lines 268-374) and collate (lines 382-399): consecutive messages of
//     one role are joined with "\n\n" (tool messages excepted); .System is every system message joined with
//     "\n\n" (they stay in .Messages); a template with .Messages gets {System, Messages, Tools, Response: "",
//     Think, ThinkLevel, IsThinkSet}; otherwise the legacy path executes the template once per
//     system/user/assistant turn with .System/.Prompt/.Response, and the last turn is executed with everything after
//     {{ .Response }} cut off (a trailing assistant message is a prefill left open).
//   - thinking/template.go, InferTags (lines 60-118): the thinking capability (a .Thinking field inside a range over
//     .Messages, between text nodes that become the opening/closing tags).
//
// The runner's BOS (llm/llama_server.go: tokenizer.ggml.add_bos_token) is added on the Python side.
//
// mode "data" executes the template on each case as is (a map, no {{ .Response }} appended), for tests of
// template fragments.
//
// Output on stdout: {"renders": [{"output": "...", "error": ""}, ...], "uses_messages": bool, "thinking": bool}.
// A template that does not parse exits with status 2 and the parse error on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type message struct {
	Role     string `json:"role"`
	Content  string `json:"content"`
	Thinking string `json:"thinking"`
}

// templateMessage mirrors template/template.go's templateMessage (the fields a TEMPLATE can read).
type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []any
	ToolName   string
	ToolCallID string
}

type chatCase struct {
	Messages []message `json:"messages"`
	Think    *bool     `json:"think"`
}

type request struct {
	Template string            `json:"template"`
	Mode     string            `json:"mode"`
	System   string            `json:"system"`
	Cases    []json.RawMessage `json:"cases"`
}

type render struct {
	Output string `json:"output"`
	Error  string `json:"error"`
}

// funcs: template/template.go's FuncMap (toTypeScriptType only matters with tools, which chat checks do not pass).
var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":      func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate":    func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string { return "any" },
}

var responseNode = parse.ActionNode{
	NodeType: parse.NodeAction,
	Pipe: &parse.PipeNode{
		NodeType: parse.NodePipe,
		Cmds: []*parse.CommandNode{{
			NodeType: parse.NodeCommand,
			Args:     []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}},
		}},
	},
}

// parseTemplate: template/template.go Parse.
func parseTemplate(s string, appendResponse bool) (*template.Template, []string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(s)
	if err != nil {
		return nil, nil, err
	}
	vars, err := templateVars(tmpl)
	if err != nil {
		return nil, nil, err
	}
	if appendResponse && !contains(vars, "messages") && !contains(vars, "response") {
		tmpl.Tree.Root.Nodes = append(tmpl.Tree.Root.Nodes, &responseNode)
	}
	return tmpl, vars, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// templateVars: template/template.go (*Template).Vars.
func templateVars(t *template.Template) ([]string, error) {
	var vars []string
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		for _, n := range tt.Root.Nodes {
			v, err := identifiers(n)
			if err != nil {
				return vars, err
			}
			vars = append(vars, v...)
		}
	}
	set := map[string]bool{}
	for _, n := range vars {
		set[strings.ToLower(n)] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// identifiers: template/template.go Identifiers.
func identifiers(n parse.Node) ([]string, error) {
	switch n := n.(type) {
	case *parse.ListNode:
		var names []string
		for _, c := range n.Nodes {
			i, err := identifiers(c)
			if err != nil {
				return names, err
			}
			names = append(names, i...)
		}
		return names, nil
	case *parse.TemplateNode:
		if n.Pipe == nil {
			return nil, errors.New("undefined template specified")
		}
		return identifiers(n.Pipe)
	case *parse.ActionNode:
		if n.Pipe == nil {
			return nil, errors.New("undefined action in template")
		}
		return identifiers(n.Pipe)
	case *parse.BranchNode:
		if n.Pipe == nil {
			return nil, errors.New("undefined branch")
		}
		names, err := identifiers(n.Pipe)
		if err != nil {
			return names, err
		}
		for _, l := range []*parse.ListNode{n.List, n.ElseList} {
			if l != nil {
				i, err := identifiers(l)
				if err != nil {
					return names, err
				}
				names = append(names, i...)
			}
		}
		return names, nil
	case *parse.IfNode:
		return identifiers(&n.BranchNode)
	case *parse.RangeNode:
		return identifiers(&n.BranchNode)
	case *parse.WithNode:
		return identifiers(&n.BranchNode)
	case *parse.PipeNode:
		var names []string
		for _, c := range n.Cmds {
			for _, a := range c.Args {
				i, err := identifiers(a)
				if err != nil {
					return names, err
				}
				names = append(names, i...)
			}
		}
		return names, nil
	case *parse.FieldNode:
		return n.Ident, nil
	case *parse.VariableNode:
		return n.Ident, nil
	}
	return nil, nil
}

// collate: template/template.go collate.
func collate(msgs []message) (string, []message) {
	var system []string
	var collated []message
	for _, m := range msgs {
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == m.Role && m.Role != "tool" {
			collated[len(collated)-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, m)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

// deleteNode: template/template.go deleteNode (cuts everything after {{ .Response }} in the legacy path).
func deleteNode(n parse.Node, fn func(parse.Node) bool) parse.Node {
	var walk func(n parse.Node) parse.Node
	walk = func(n parse.Node) parse.Node {
		if fn(n) {
			return nil
		}
		switch t := n.(type) {
		case *parse.ListNode:
			var nodes []parse.Node
			for _, c := range t.Nodes {
				if n := walk(c); n != nil {
					nodes = append(nodes, n)
				}
			}
			t.Nodes = nodes
			return t
		case *parse.IfNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.WithNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.RangeNode:
			t.BranchNode = *walk(&t.BranchNode).(*parse.BranchNode)
		case *parse.BranchNode:
			t.List = walk(t.List).(*parse.ListNode)
			if t.ElseList != nil {
				t.ElseList = walk(t.ElseList).(*parse.ListNode)
			}
		case *parse.ActionNode:
			n := walk(t.Pipe)
			if n == nil {
				return nil
			}
			t.Pipe = n.(*parse.PipeNode)
		case *parse.PipeNode:
			var commands []*parse.CommandNode
			for _, c := range t.Cmds {
				var args []parse.Node
				for _, a := range c.Args {
					if n := walk(a); n != nil {
						args = append(args, n)
					}
				}
				if len(args) == 0 {
					return nil
				}
				c.Args = args
				commands = append(commands, c)
			}
			if len(commands) == 0 {
				return nil
			}
			t.Cmds = commands
		}
		return n
	}
	return walk(n)
}

// execute: template/template.go (*Template).Execute for a chat request (no tools, no suffix).
func execute(tmpl *template.Template, vars []string, msgs []message, think, isThinkSet bool) (string, error) {
	system, messages := collate(msgs)
	var w bytes.Buffer
	if contains(vars, "messages") {
		converted := make([]*templateMessage, len(messages))
		for i, m := range messages {
			converted[i] = &templateMessage{Role: m.Role, Content: m.Content, Thinking: m.Thinking}
		}
		err := tmpl.Execute(&w, map[string]any{
			"System": system, "Messages": converted, "Tools": nil, "Response": "",
			"Think": think, "ThinkLevel": "", "IsThinkSet": isThinkSet,
		})
		return w.String(), err
	}

	system = ""
	var prompt, response string
	for _, m := range messages {
		run := func() error {
			if err := tmpl.Execute(&w, map[string]any{
				"System": system, "Prompt": prompt, "Response": response,
				"Think": think, "ThinkLevel": "", "IsThinkSet": isThinkSet,
			}); err != nil {
				return err
			}
			system, prompt, response = "", "", ""
			return nil
		}
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := run(); err != nil {
					return w.String(), err
				}
			}
			system = m.Content
		case "user":
			if response != "" {
				if err := run(); err != nil {
					return w.String(), err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	var cut bool
	nodes := deleteNode(tmpl.Root.Copy(), func(n parse.Node) bool {
		if field, ok := n.(*parse.FieldNode); ok && contains(field.Ident, "Response") {
			cut = true
			return false
		}
		return cut
	})
	tree := parse.Tree{Root: nodes.(*parse.ListNode)}
	last, err := template.New("").AddParseTree("", &tree)
	if err != nil {
		return w.String(), err
	}
	err = last.Execute(&w, map[string]any{
		"System": system, "Prompt": prompt, "Response": response,
		"Think": think, "ThinkLevel": "", "IsThinkSet": isThinkSet,
	})
	return w.String(), err
}

// inferThinking: thinking/template.go InferTags, reduced to "are there opening and closing tags".
func inferThinking(t *template.Template) bool {
	var ancestors []parse.Node
	opening, closing := "", ""
	var visit func(n parse.Node)
	visit = func(n parse.Node) {
		if n == nil {
			return
		}
		ancestors = append(ancestors, n)
		defer func() { ancestors = ancestors[:len(ancestors)-1] }()
		if x, ok := n.(*parse.FieldNode); ok && len(x.Ident) > 0 && x.Ident[0] == "Thinking" {
			var rng *parse.RangeNode
			for i := len(ancestors) - 1; i >= 0; i-- {
				if r, ok := ancestors[i].(*parse.RangeNode); ok {
					rng = r
					break
				}
			}
			if rng != nil && rangeUsesMessages(rng) {
				for i := len(ancestors) - 1; i >= 0; i-- {
					if l, ok := ancestors[i].(*parse.ListNode); ok {
						if tn, ok := l.Nodes[0].(*parse.TextNode); ok {
							opening = strings.TrimSpace(tn.String())
						}
						if tn, ok := l.Nodes[len(l.Nodes)-1].(*parse.TextNode); ok {
							closing = strings.TrimSpace(tn.String())
						}
						break
					}
				}
			}
		}
		switch x := n.(type) {
		case *parse.ListNode:
			for _, c := range x.Nodes {
				visit(c)
			}
		case *parse.BranchNode:
			if x.Pipe != nil {
				visit(x.Pipe)
			}
			if x.List != nil {
				visit(x.List)
			}
			if x.ElseList != nil {
				visit(x.ElseList)
			}
		case *parse.ActionNode:
			visit(x.Pipe)
		case *parse.WithNode:
			visit(&x.BranchNode)
		case *parse.RangeNode:
			visit(&x.BranchNode)
		case *parse.IfNode:
			visit(&x.BranchNode)
		case *parse.TemplateNode:
			if x.Pipe != nil {
				visit(x.Pipe)
			}
		case *parse.PipeNode:
			for _, c := range x.Cmds {
				visit(c)
			}
		case *parse.CommandNode:
			for _, a := range x.Args {
				visit(a)
			}
		}
	}
	visit(t.Root)
	return opening != "" && closing != ""
}

func rangeUsesMessages(r *parse.RangeNode) bool {
	for _, c := range r.Pipe.Cmds {
		for _, a := range c.Args {
			if f, ok := a.(*parse.FieldNode); ok && f.Ident[0] == "Messages" {
				return true
			}
		}
	}
	return false
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gotemplate: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	var req request
	if err := json.Unmarshal(input, &req); err != nil {
		fail("stdin is not a JSON request: %v", err)
	}
	tmpl, vars, err := parseTemplate(req.Template, req.Mode != "data")
	if err != nil {
		fail("template does not parse: %v", err)
	}
	thinking := inferThinking(tmpl)
	renders := make([]render, 0, len(req.Cases))
	for _, raw := range req.Cases {
		r := render{}
		if req.Mode == "data" {
			var data map[string]any
			if err := json.Unmarshal(raw, &data); err != nil {
				fail("case is not an object: %v", err)
			}
			var out bytes.Buffer
			if err := tmpl.Execute(&out, data); err != nil {
				r.Error = err.Error()
			}
			r.Output = out.String()
		} else {
			var c chatCase
			if err := json.Unmarshal(raw, &c); err != nil {
				fail("case is not a chat request: %v", err)
			}
			// ChatHandler: thinking models default to Think=true; IsThinkSet is req.Think != nil afterwards.
			think, isThinkSet := false, false
			if c.Think != nil {
				think, isThinkSet = *c.Think, true
			} else if thinking {
				think, isThinkSet = true, true
			}
			msgs := c.Messages
			// ChatHandler: the Modelfile SYSTEM only when the request does not start with a system message.
			if len(msgs) > 0 && msgs[0].Role != "system" && req.System != "" {
				msgs = append([]message{{Role: "system", Content: req.System}}, msgs...)
			}
			out, err := execute(tmpl, vars, msgs, think, isThinkSet)
			r.Output = out
			if err != nil {
				r.Error = err.Error()
			}
		}
		renders = append(renders, r)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(map[string]any{
		"renders": renders, "uses_messages": contains(vars, "messages"), "thinking": thinking,
	}); err != nil {
		fail("writing stdout: %v", err)
	}
}
