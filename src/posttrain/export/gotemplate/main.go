// Command gotemplate renders a Modelfile TEMPLATE the way Ollama does, for posttrain's export verification: the
// prompt Ollama would send the model, to compare with the tokenizer's Jinja chat template byte for byte.
//
// Input on stdin, one JSON object:
//
//	{"template": "<Go template>", "mode": "chat", "system": "<Modelfile SYSTEM>", "chat_template": "<GGUF Jinja>",
//	 "cases": [{"messages": [{"role": "user", "content": "hi"}], "tools": [...], "think": null}, ...]}
//
// Messages and tools are shaped like Ollama's /api/chat request (api/types.go Message, ToolCall, Tool): messages
// may carry "thinking", "tool_calls" ([{"function": {"name", "arguments": {...}}}]), "tool_name", "tool_call_id".
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
//   - template/template.go lines 376-513: .Tools and each message's .ToolCalls as the template sees them
//     (templateTool, templateArgs... printing as compact JSON); server/routes.go ChatHandler and server/images.go
//     CheckCapabilities: a request with tools to a template without .Tools is refused ("does not support tools"),
//     think=true to one without thinking tags too.
//   - server/images.go lines 187-310 (goTemplateCapabilities, chatTemplateCapabilities, shouldPreferChatTemplate):
//     the capabilities Ollama reads off the TEMPLATE and the GGUF's Jinja, and whether it would use the Jinja instead.
//
// mode "parse" parses model replies as ChatHandler does (cases: {"prompt", "chunks": [...], "tools", "think"}):
// thinking/parser.go with the inferred tags, then tools/tools.go with the tag tools/template.go parseTag reads off
// the template, chunk by chunk; output "replies": [{"content", "thinking", "tool_calls"}].
//
// The runner's BOS (llm/llama_server.go: tokenizer.ggml.add_bos_token) is added on the Python side.
//
// mode "data" executes the template on each case as is (a map, no {{ .Response }} appended), for tests of
// template fragments.
//
// Output on stdout: {"renders": [{"output": "...", "error": ""}, ...], "replies": [...], "uses_messages": bool,
// "thinking": bool, "thinking_tags", "tool_tag", "capabilities", "tool_round_trip", "chat_template_capabilities",
// "prefer_chat_template"}.
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
	"unicode"
)

// message: api/types.go Message, the fields a chat request's message carries to the template.
type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking"`
	ToolCalls  []toolCall `json:"tool_calls"`
	ToolName   string     `json:"tool_name"`
	ToolCallID string     `json:"tool_call_id"`
}

// toolCall: api/types.go ToolCall (lines 221-231). The arguments keep their keys' order in Ollama
// (ToolCallFunctionArguments, an ordered map), but the template only sees them through
// convertMessagesForTemplate as a plain map (templateArgs), so a map is enough here.
type toolCall struct {
	ID       string           `json:"id,omitempty"`
	Function toolCallFunction `json:"function"`
}

type toolCallFunction struct {
	Index     int            `json:"index"`
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments"`
}

// UnmarshalJSON also takes arguments as JSON text, as Ollama's OpenAI-compatible endpoint does
// (openai/openai.go FromChatRequest decodes tool_calls[].function.arguments).
func (f *toolCallFunction) UnmarshalJSON(data []byte) error {
	var raw struct {
		Index     int             `json:"index"`
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	f.Index, f.Name, f.Arguments = raw.Index, raw.Name, map[string]any{}
	if len(raw.Arguments) == 0 || string(raw.Arguments) == "null" {
		return nil
	}
	var text string
	if err := json.Unmarshal(raw.Arguments, &text); err == nil {
		return json.Unmarshal([]byte(text), &f.Arguments)
	}
	return json.Unmarshal(raw.Arguments, &f.Arguments)
}

// tool: api/types.go Tool, ToolFunction, ToolFunctionParameters and ToolProperty (lines 305-492): what a request's
// tool schema keeps (fields Ollama's types do not have, such as a property's "default", are dropped on the way in).
type tool struct {
	Type     string       `json:"type"`
	Items    any          `json:"items,omitempty"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name        string                 `json:"name"`
	Description string                 `json:"description,omitempty"`
	Parameters  toolFunctionParameters `json:"parameters"`
}

type toolFunctionParameters struct {
	Type       string                   `json:"type"`
	Defs       any                      `json:"$defs,omitempty"`
	Items      any                      `json:"items,omitempty"`
	Required   []string                 `json:"required,omitempty"`
	Properties *map[string]toolProperty `json:"properties"`
}

type toolProperty struct {
	AnyOf       []toolProperty           `json:"anyOf,omitempty"`
	Type        propertyType             `json:"type,omitempty"`
	Items       any                      `json:"items,omitempty"`
	Description string                   `json:"description,omitempty"`
	Enum        []any                    `json:"enum,omitempty"`
	Properties  *map[string]toolProperty `json:"properties,omitempty"`
	Required    []string                 `json:"required,omitempty"`
}

// propertyType: api/types.go PropertyType (a string or a list of strings; one type marshals as a string).
type propertyType []string

func (pt *propertyType) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*pt = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(data, &a); err != nil {
		return err
	}
	*pt = a
	return nil
}

func (pt propertyType) MarshalJSON() ([]byte, error) {
	if len(pt) == 1 {
		return json.Marshal(pt[0])
	}
	return json.Marshal([]string(pt))
}

// The template-side types: template/template.go lines 376-513 (templateTools, templateArgs, templateProperties,
// templateTool..., templateMessage, convertToolsForTemplate, convertMessagesForTemplate). Printing {{ . }} of a
// tool, {{ .Function.Arguments }} or {{ .Tools }} gives compact JSON (String methods, json.Marshal: struct order,
// map keys sorted, <>& escaped as \u003c...).
type templateTools []templateTool

func (t templateTools) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateArgs map[string]any

func (t templateArgs) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateProperties map[string]toolProperty

func (t templateProperties) String() string {
	if t == nil {
		return "{}"
	}
	bts, _ := json.Marshal(t)
	return string(bts)
}

func (t templateTool) String() string {
	bts, _ := json.Marshal(t)
	return string(bts)
}

type templateTool struct {
	Type     string               `json:"type"`
	Items    any                  `json:"items,omitempty"`
	Function templateToolFunction `json:"function"`
}

type templateToolFunction struct {
	Name        string                         `json:"name"`
	Description string                         `json:"description"`
	Parameters  templateToolFunctionParameters `json:"parameters"`
}

type templateToolFunctionParameters struct {
	Type       string             `json:"type"`
	Defs       any                `json:"$defs,omitempty"`
	Items      any                `json:"items,omitempty"`
	Required   []string           `json:"required,omitempty"`
	Properties templateProperties `json:"properties"`
}

type templateToolCall struct {
	ID       string
	Function templateToolCallFunction
}

type templateToolCallFunction struct {
	Index     int
	Name      string
	Arguments templateArgs
}

// templateMessage: template/template.go templateMessage (the fields a TEMPLATE can read).
type templateMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []templateToolCall
	ToolName   string
	ToolCallID string
}

func convertToolsForTemplate(tools []tool) templateTools {
	if tools == nil {
		return nil
	}
	result := make(templateTools, len(tools))
	for i, t := range tools {
		var properties templateProperties
		if t.Function.Parameters.Properties != nil {
			properties = templateProperties(*t.Function.Parameters.Properties)
		}
		result[i] = templateTool{
			Type:  t.Type,
			Items: t.Items,
			Function: templateToolFunction{
				Name:        t.Function.Name,
				Description: t.Function.Description,
				Parameters: templateToolFunctionParameters{
					Type:       t.Function.Parameters.Type,
					Defs:       t.Function.Parameters.Defs,
					Items:      t.Function.Parameters.Items,
					Required:   t.Function.Parameters.Required,
					Properties: properties,
				},
			},
		}
	}
	return result
}

func convertMessagesForTemplate(messages []message) []*templateMessage {
	if messages == nil {
		return nil
	}
	result := make([]*templateMessage, len(messages))
	for i, msg := range messages {
		var calls []templateToolCall
		for _, tc := range msg.ToolCalls {
			calls = append(calls, templateToolCall{
				ID: tc.ID,
				Function: templateToolCallFunction{
					Index: tc.Function.Index, Name: tc.Function.Name, Arguments: templateArgs(tc.Function.Arguments),
				},
			})
		}
		result[i] = &templateMessage{
			Role: msg.Role, Content: msg.Content, Thinking: msg.Thinking, ToolCalls: calls,
			ToolName: msg.ToolName, ToolCallID: msg.ToolCallID,
		}
	}
	return result
}

type chatCase struct {
	Messages []message `json:"messages"`
	Tools    []tool    `json:"tools"`
	Think    *bool     `json:"think"`
}

// parseCase: one model reply to parse as Ollama's ChatHandler parses a stream (mode "parse").
type parseCase struct {
	Prompt string   `json:"prompt"` // the rendered prompt (a prompt ending in the opening tag starts in thinking)
	Chunks []string `json:"chunks"` // the reply as the runner streams it (e.g. one piece per token)
	Tools  []tool   `json:"tools"`
	Think  *bool    `json:"think"`
}

type request struct {
	Template     string            `json:"template"`
	Mode         string            `json:"mode"`
	System       string            `json:"system"`
	ChatTemplate string            `json:"chat_template"`
	Cases        []json.RawMessage `json:"cases"`
}

type render struct {
	Output string `json:"output"`
	Error  string `json:"error"`
}

// parsed: what the API returns for a (non-streamed) chat reply: writeChatResponse joins the chunks' content and
// thinking and collects their tool calls.
type parsed struct {
	Content   string     `json:"content"`
	Thinking  string     `json:"thinking"`
	ToolCalls []toolCall `json:"tool_calls"`
}

// funcs: template/template.go's FuncMap.
var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":   func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate": func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string {
		if param, ok := v.(toolProperty); ok {
			return param.toTypeScriptType()
		}
		if param, ok := v.(*toolProperty); ok && param != nil {
			return param.toTypeScriptType()
		}
		return "any"
	},
}

// toTypeScriptType: api/types.go ToolProperty.ToTypeScriptType and mapToTypeScriptType.
func (tp toolProperty) toTypeScriptType() string {
	if len(tp.AnyOf) > 0 {
		var types []string
		for _, anyOf := range tp.AnyOf {
			types = append(types, anyOf.toTypeScriptType())
		}
		return strings.Join(types, " | ")
	}
	if len(tp.Type) == 0 {
		return "any"
	}
	var types []string
	for _, t := range tp.Type {
		switch t {
		case "string":
			types = append(types, "string")
		case "number", "integer":
			types = append(types, "number")
		case "boolean":
			types = append(types, "boolean")
		case "array":
			types = append(types, "any[]")
		case "object":
			types = append(types, "Record<string, any>")
		case "null":
			types = append(types, "null")
		default:
			types = append(types, "any")
		}
	}
	return strings.Join(types, " | ")
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

// execute: template/template.go (*Template).Execute for a chat request (no suffix).
func execute(tmpl *template.Template, vars []string, msgs []message, tools []tool, think, isThinkSet bool) (string, error) {
	system, messages := collate(msgs)
	var w bytes.Buffer
	if contains(vars, "messages") {
		err := tmpl.Execute(&w, map[string]any{
			"System": system, "Messages": convertMessagesForTemplate(messages), "Tools": convertToolsForTemplate(tools),
			"Response": "", "Think": think, "ThinkLevel": "", "IsThinkSet": isThinkSet,
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

// templateVisit: thinking/template.go templateVisit.
func templateVisit(n parse.Node, enterFn func(parse.Node) bool, exitFn func(parse.Node)) {
	if n == nil {
		return
	}
	if !enterFn(n) {
		return
	}
	switch x := n.(type) {
	case *parse.ListNode:
		for _, c := range x.Nodes {
			templateVisit(c, enterFn, exitFn)
		}
	case *parse.BranchNode:
		if x.Pipe != nil {
			templateVisit(x.Pipe, enterFn, exitFn)
		}
		if x.List != nil {
			templateVisit(x.List, enterFn, exitFn)
		}
		if x.ElseList != nil {
			templateVisit(x.ElseList, enterFn, exitFn)
		}
	case *parse.ActionNode:
		templateVisit(x.Pipe, enterFn, exitFn)
	case *parse.WithNode:
		templateVisit(&x.BranchNode, enterFn, exitFn)
	case *parse.RangeNode:
		templateVisit(&x.BranchNode, enterFn, exitFn)
	case *parse.IfNode:
		templateVisit(&x.BranchNode, enterFn, exitFn)
	case *parse.TemplateNode:
		templateVisit(x.Pipe, enterFn, exitFn)
	case *parse.PipeNode:
		for _, c := range x.Cmds {
			templateVisit(c, enterFn, exitFn)
		}
	case *parse.CommandNode:
		for _, a := range x.Args {
			templateVisit(a, enterFn, exitFn)
		}
	}
	if exitFn != nil {
		exitFn(n)
	}
}

// inferTags: thinking/template.go InferTags (lines 60-118): a .Thinking inside a range over .Messages; the first
// and last text nodes of the nearest list around it are the opening and closing tags (the last such .Thinking wins).
func inferTags(t *template.Template) (string, string) {
	var ancestors []parse.Node
	openingTag, closingTag := "", ""
	enterFn := func(n parse.Node) bool {
		ancestors = append(ancestors, n)
		if x, ok := n.(*parse.FieldNode); ok && len(x.Ident) > 0 && x.Ident[0] == "Thinking" {
			var mostRecentRange *parse.RangeNode
			for i := len(ancestors) - 1; i >= 0; i-- {
				if r, ok := ancestors[i].(*parse.RangeNode); ok {
					mostRecentRange = r
					break
				}
			}
			if mostRecentRange == nil || !rangeUsesField(mostRecentRange, "Messages") {
				return true
			}
			for i := len(ancestors) - 1; i >= 0; i-- {
				if l, ok := ancestors[i].(*parse.ListNode); ok {
					if t, ok := l.Nodes[0].(*parse.TextNode); ok {
						openingTag = strings.TrimSpace(t.String())
					}
					if t, ok := l.Nodes[len(l.Nodes)-1].(*parse.TextNode); ok {
						closingTag = strings.TrimSpace(t.String())
					}
					break
				}
			}
		}
		return true
	}
	exitFn := func(n parse.Node) { ancestors = ancestors[:len(ancestors)-1] }
	templateVisit(t.Root, enterFn, exitFn)
	return openingTag, closingTag
}

func rangeUsesField(rangeNode *parse.RangeNode, field string) bool {
	found := false
	templateVisit(rangeNode.BranchNode.Pipe, func(n parse.Node) bool {
		if x, ok := n.(*parse.FieldNode); ok && x.Ident[0] == field {
			found = true
		}
		return true
	}, nil)
	return found
}

// parseTag: tools/template.go parseTag: the first non-blank text inside the first {{ if ... .ToolCalls ... }},
// cut before "{" ("{" when there is none: then any JSON object that opens the reply is tried as a call).
func parseTag(tmpl *template.Template) string {
	if tmpl == nil || tmpl.Tree == nil {
		return "{"
	}
	tc := findToolCallNode(tmpl.Tree.Root.Nodes)
	if tc == nil {
		return "{"
	}
	tn := findTextNode(tc.List.Nodes)
	if tn == nil {
		return "{"
	}
	tag := strings.ReplaceAll(string(tn.Text), "\r\n", "\n")
	tag, _, _ = strings.Cut(tag, "{")
	tag = strings.TrimSpace(tag)
	if tag == "" {
		tag = "{"
	}
	return tag
}

// findToolCallNode: tools/template.go findToolCallNode.
func findToolCallNode(nodes []parse.Node) *parse.IfNode {
	isToolCallsNode := func(n *parse.IfNode) bool {
		for _, cmd := range n.Pipe.Cmds {
			for _, arg := range cmd.Args {
				if field, ok := arg.(*parse.FieldNode); ok && contains(field.Ident, "ToolCalls") {
					return true
				}
			}
		}
		return false
	}
	for _, node := range nodes {
		switch n := node.(type) {
		case *parse.IfNode:
			if isToolCallsNode(n) {
				return n
			}
			if result := findToolCallNode(n.List.Nodes); result != nil {
				return result
			}
			if n.ElseList != nil {
				if result := findToolCallNode(n.ElseList.Nodes); result != nil {
					return result
				}
			}
		case *parse.ListNode:
			if result := findToolCallNode(n.Nodes); result != nil {
				return result
			}
		case *parse.RangeNode:
			if result := findToolCallNode(n.List.Nodes); result != nil {
				return result
			}
			if n.ElseList != nil {
				if result := findToolCallNode(n.ElseList.Nodes); result != nil {
					return result
				}
			}
		case *parse.WithNode:
			if result := findToolCallNode(n.List.Nodes); result != nil {
				return result
			}
			if n.ElseList != nil {
				if result := findToolCallNode(n.ElseList.Nodes); result != nil {
					return result
				}
			}
		}
	}
	return nil
}

// findTextNode: tools/template.go findTextNode (stops at the first action or at a branch without text).
func findTextNode(nodes []parse.Node) *parse.TextNode {
	for _, node := range nodes {
		switch n := node.(type) {
		case *parse.TextNode:
			if len(bytes.TrimSpace(n.Text)) == 0 {
				continue
			}
			return n
		case *parse.IfNode:
			if text := findTextNode(n.List.Nodes); text != nil {
				return text
			}
			if n.ElseList != nil {
				if text := findTextNode(n.ElseList.Nodes); text != nil {
					return text
				}
			}
			return nil
		case *parse.ListNode:
			if text := findTextNode(n.Nodes); text != nil {
				return text
			}
		case *parse.RangeNode:
			if text := findTextNode(n.List.Nodes); text != nil {
				return text
			}
			if n.ElseList != nil {
				if text := findTextNode(n.ElseList.Nodes); text != nil {
					return text
				}
			}
			return nil
		case *parse.WithNode:
			if text := findTextNode(n.List.Nodes); text != nil {
				return text
			}
			if n.ElseList != nil {
				if text := findTextNode(n.ElseList.Nodes); text != nil {
					return text
				}
			}
			return nil
		case *parse.ActionNode:
			return nil
		}
	}
	return nil
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// toolParser: tools/tools.go Parser (Add, findTag, parseToolCall, findTool, findArguments, done).
type toolParser struct {
	tag    string
	tools  []tool
	state  int // 0 looking for the tag, 1 tool calling, 2 done
	buffer []byte
	n      int
}

func (p *toolParser) Add(s string) (calls []toolCall, content string) {
	if p.state == 2 {
		return nil, s
	}
	p.buffer = append(p.buffer, s...)
	if p.state == 0 {
		i, found := p.findTag()
		if i == -1 {
			content = string(p.buffer)
			p.buffer = []byte{}
		} else {
			content = string(p.buffer[:i])
			p.buffer = p.buffer[i:]
		}
		if p.tag == "{" || p.tag == "[" {
			if strings.TrimSpace(content) != "" {
				p.state = 2
				return nil, content + string(p.buffer)
			}
		}
		if !found {
			return nil, content
		}
		p.state = 1
	}
	for {
		call := p.parseToolCall()
		if call == nil {
			break
		}
		calls = append(calls, *call)
	}
	if p.done() {
		p.state = 2
		content = string(p.buffer)
		p.buffer = []byte{}
	}
	return calls, content
}

func (p *toolParser) findTag() (int, bool) {
	if i := bytes.Index(p.buffer, []byte(p.tag)); i > -1 {
		return i, true
	}
	for i := minInt(len(p.buffer), len(p.tag)); i > 0; i-- {
		if bytes.HasSuffix(p.buffer, []byte(p.tag[:i])) {
			return len(p.buffer) - i, false
		}
	}
	return -1, false
}

func (p *toolParser) parseToolCall() *toolCall {
	t, end := findTool(p.tools, p.buffer)
	if t == nil {
		return nil
	}
	args, i := findArguments(t, p.buffer)
	if args == nil {
		return nil
	}
	if i > end {
		end = i
	}
	tc := &toolCall{Function: toolCallFunction{Name: t.Function.Name, Arguments: args, Index: p.n}}
	p.n++
	p.buffer = p.buffer[end:]
	return tc
}

func findTool(tools []tool, buf []byte) (*tool, int) {
	if len(buf) == 0 {
		return nil, 0
	}
	var longest string
	for _, t := range tools {
		if len(t.Function.Name) > len(longest) {
			longest = t.Function.Name
		}
	}
	for i := 1; i <= minInt(len(buf), len(longest)); i++ {
		tail := buf[len(buf)-i:]
		for _, t := range tools {
			name := []byte(t.Function.Name)
			if len(tail) < len(name) && bytes.HasPrefix(name, tail) {
				return nil, 0
			}
		}
	}
	var found *tool
	start, end := -1, -1
	for i := range tools {
		name := []byte(tools[i].Function.Name)
		pos := bytes.Index(buf, name)
		if pos == -1 {
			continue
		}
		if start != -1 {
			if pos > start {
				continue
			}
			if pos == start && len(name) <= len(found.Function.Name) {
				continue
			}
		}
		found = &tools[i]
		start = pos
		end = pos + len(name)
	}
	if found != nil {
		return found, end
	}
	return nil, 0
}

func findArguments(t *tool, buffer []byte) (map[string]any, int) {
	if len(buffer) == 0 {
		return nil, 0
	}
	start := -1
	var braces int
	var inString, escaped bool
	for i := range buffer {
		c := buffer[i]
		if escaped {
			escaped = false
			continue
		}
		if c == '\\' {
			escaped = true
			continue
		}
		if c == '"' {
			inString = !inString
			continue
		}
		if inString {
			continue
		}
		if c == '{' {
			if braces == 0 {
				start = i
			}
			braces++
		} else if c == '}' {
			braces--
			if braces == 0 && start != -1 {
				object := buffer[start : i+1]
				var data map[string]any
				if err := json.Unmarshal(object, &data); err != nil {
					start = -1
					continue
				}
				var findObject func(obj map[string]any) (map[string]any, bool)
				findObject = func(obj map[string]any) (map[string]any, bool) {
					findMap := func(name string, obj map[string]any) (map[string]any, bool) {
						if args, ok := obj[name].(map[string]any); ok {
							return args, true
						}
						if argsStr, ok := obj[name].(string); ok {
							var argsData map[string]any
							if err := json.Unmarshal([]byte(argsStr), &argsData); err == nil {
								return argsData, ok
							}
						}
						return nil, false
					}
					if _, hasName := obj["name"]; hasName {
						if args, ok := findMap("arguments", obj); ok {
							return args, true
						}
						if args, ok := findMap("parameters", obj); ok {
							return args, true
						}
						return nil, true
					}
					if args, ok := findMap(t.Function.Name, obj); ok {
						return args, true
					}
					for _, v := range obj {
						switch child := v.(type) {
						case map[string]any:
							if result, found := findObject(child); found {
								return result, true
							}
						case []any:
							for _, item := range child {
								if childObj, ok := item.(map[string]any); ok {
									if result, found := findObject(childObj); found {
										return result, true
									}
								}
							}
						}
					}
					return nil, false
				}
				if args, found := findObject(data); found {
					return args, i
				}
				return data, i
			}
			if braces < 0 {
				braces = 0
			}
		}
	}
	return nil, 0
}

func (p *toolParser) done() bool {
	var open, close byte
	switch p.tag {
	case "{":
		open, close = '{', '}'
	case "[":
		open, close = '[', ']'
	default:
		return false
	}
	var count int
	var inString, escaped bool
	for _, c := range p.buffer {
		if escaped {
			escaped = false
			continue
		}
		if c == '\\' {
			escaped = true
			continue
		}
		if c == '"' {
			inString = !inString
			continue
		}
		if inString {
			continue
		}
		if c == open {
			count++
		} else if c == close {
			count--
			if count == 0 {
				return true
			}
		}
	}
	return false
}

// thinkingParser: thinking/parser.go Parser (AddContent, eat, overlap).
type thinkingParser struct {
	state      int // 0 looking for opening, 1 started eating whitespace, 2 thinking, 3 done eating whitespace, 4 done
	openingTag string
	closingTag string
	acc        strings.Builder
}

func (s *thinkingParser) AddContent(content string) (string, string) {
	s.acc.WriteString(content)
	var thinkingSb, remainingSb strings.Builder
	keepLooping := true
	for keepLooping {
		var thinking, remaining string
		thinking, remaining, keepLooping = s.eat()
		thinkingSb.WriteString(thinking)
		remainingSb.WriteString(remaining)
	}
	return thinkingSb.String(), remainingSb.String()
}

func (s *thinkingParser) eat() (string, string, bool) {
	switch s.state {
	case 0:
		trimmed := strings.TrimLeftFunc(s.acc.String(), unicode.IsSpace)
		if strings.HasPrefix(trimmed, s.openingTag) {
			after := strings.Join(strings.Split(trimmed, s.openingTag)[1:], s.openingTag)
			after = strings.TrimLeftFunc(after, unicode.IsSpace)
			s.acc.Reset()
			s.acc.WriteString(after)
			if after == "" {
				s.state = 1
			} else {
				s.state = 2
			}
			return "", "", true
		} else if strings.HasPrefix(s.openingTag, trimmed) {
			return "", "", false
		} else if trimmed == "" {
			return "", "", false
		}
		s.state = 4
		untrimmed := s.acc.String()
		s.acc.Reset()
		return "", untrimmed, false
	case 1:
		trimmed := strings.TrimLeftFunc(s.acc.String(), unicode.IsSpace)
		s.acc.Reset()
		if trimmed == "" {
			return "", "", false
		}
		s.state = 2
		s.acc.WriteString(trimmed)
		return "", "", true
	case 2:
		acc := s.acc.String()
		if strings.Contains(acc, s.closingTag) {
			split := strings.Split(acc, s.closingTag)
			thinking := split[0]
			remaining := strings.TrimLeftFunc(strings.Join(split[1:], s.closingTag), unicode.IsSpace)
			s.acc.Reset()
			if remaining == "" {
				s.state = 3
			} else {
				s.state = 4
			}
			return thinking, remaining, false
		} else if overlapLen := overlap(acc, s.closingTag); overlapLen > 0 {
			thinking := acc[:len(acc)-overlapLen]
			remaining := acc[len(acc)-overlapLen:]
			s.acc.Reset()
			s.acc.WriteString(remaining)
			return thinking, "", false
		}
		s.acc.Reset()
		return acc, "", false
	case 3:
		trimmed := strings.TrimLeftFunc(s.acc.String(), unicode.IsSpace)
		s.acc.Reset()
		if trimmed != "" {
			s.state = 4
		}
		return "", trimmed, false
	default:
		acc := s.acc.String()
		s.acc.Reset()
		return "", acc, false
	}
}

func overlap(s, delim string) int {
	for i := minInt(len(delim), len(s)); i > 0; i-- {
		if strings.HasSuffix(s, delim[:i]) {
			return i
		}
	}
	return 0
}

// parseReply: server/routes.go ChatHandler (lines 2740-2756, 2840-2870) and writeChatResponse (non-streamed): the
// thinking parser (when think is on and the template has thinking tags; a prompt ending in the opening tag starts
// inside the thinking) runs on each chunk first, then the tool parser (when the request has tools) on what is left;
// a chunk whose parser output has content keeps that content and drops its calls, as Ollama does.
func parseReply(tmpl *template.Template, c parseCase, think bool) parsed {
	var out parsed
	var thinkingState *thinkingParser
	openingTag, closingTag := inferTags(tmpl)
	if think && openingTag != "" && closingTag != "" {
		thinkingState = &thinkingParser{openingTag: openingTag, closingTag: closingTag}
		if strings.HasSuffix(strings.TrimSpace(c.Prompt), openingTag) {
			thinkingState.AddContent(openingTag)
		}
	}
	var tp *toolParser
	if len(c.Tools) > 0 {
		tp = &toolParser{tag: parseTag(tmpl), tools: c.Tools}
	}
	for i, chunk := range c.Chunks {
		done := i == len(c.Chunks)-1
		content, thinkingContent := chunk, ""
		if thinkingState != nil {
			var remaining string
			thinkingContent, remaining = thinkingState.AddContent(content)
			if thinkingContent == "" && remaining == "" && !done {
				continue
			}
			out.Thinking += thinkingContent
			content = remaining
		}
		if tp != nil {
			calls, rest := tp.Add(content)
			if len(rest) > 0 {
				content = rest
			} else if len(calls) > 0 {
				out.ToolCalls = append(out.ToolCalls, calls...)
				content = ""
			} else if thinkingContent != "" {
				content = ""
			} else {
				content = "" // buffered by the tool parser; what is left is sent when the reply ends
				if done {
					content = tp.Content()
				}
			}
		}
		out.Content += content
	}
	return out
}

// Content: tools/tools.go Parser.Content (what is left to send when the reply ends without a call).
func (p *toolParser) Content() string {
	if p.n > 0 {
		return ""
	}
	if p.tag == "{" || p.tag == "[" {
		return string(p.buffer)
	}
	return ""
}

// Capabilities: server/images.go goTemplateCapabilities, goTemplateHasToolRoundTrip, chatTemplateCapabilities,
// chatTemplateHasToolRoundTrip, chatTemplateHasThinkingSupport and shouldPreferChatTemplate (lines 187-310): at
// load time Ollama prefers the GGUF's Jinja chat template over a Modelfile TEMPLATE that advertises fewer
// capabilities (server/images.go line 793, unless OLLAMA_GO_TEMPLATE is set).
func goTemplateCapabilities(vars []string, tmpl *template.Template) []string {
	var caps []string
	if contains(vars, "tools") {
		caps = append(caps, "tools")
	}
	if contains(vars, "suffix") {
		caps = append(caps, "insert")
	}
	if o, c := inferTags(tmpl); o != "" && c != "" {
		caps = append(caps, "thinking")
	}
	return caps
}

func goTemplateHasToolRoundTrip(vars []string, raw string) bool {
	if !contains(vars, "tools") || !contains(vars, "toolcalls") {
		return false
	}
	return strings.Contains(raw, `eq .Role "tool"`) || strings.Contains(raw, "tool_response") ||
		strings.Contains(raw, "TOOL_RESULTS")
}

func chatTemplateHasToolSupport(chat string) bool {
	return strings.Contains(chat, "tools") || strings.Contains(chat, "tool_call")
}

func chatTemplateCapabilities(chat string) []string {
	var caps []string
	if chat == "" {
		return caps
	}
	if chatTemplateHasToolSupport(chat) {
		caps = append(caps, "tools")
	}
	thinking := strings.Contains(chat, "<think>") && strings.Contains(chat, "</think>")
	if !thinking {
		thinking = (strings.Contains(chat, "content.split('</think>')") ||
			strings.Contains(chat, `content.split("</think>")`)) &&
			!strings.Contains(chat, "reasoning_content") && !strings.Contains(chat, "<SPECIAL_12>")
	}
	if thinking {
		caps = append(caps, "thinking")
	}
	return caps
}

func chatTemplateHasToolRoundTrip(chat string) bool {
	if !chatTemplateHasToolSupport(chat) {
		return false
	}
	toolCalls := strings.Contains(chat, "tool_calls") || strings.Contains(chat, "assistant_tool_call")
	return toolCalls && (strings.Contains(chat, "tool_response") || strings.Contains(chat, "tool_results") ||
		strings.Contains(chat, "role'] == 'tool'") || strings.Contains(chat, `role'] == "tool"`) ||
		strings.Contains(chat, `role"] == 'tool'`) || strings.Contains(chat, `role"] == "tool"`) ||
		strings.Contains(chat, `message.role == 'tool'`) || strings.Contains(chat, `message.role == "tool"`) ||
		strings.Contains(chat, "ipython"))
}

func shouldPreferChatTemplate(chat string, chatCaps []string, goRoundTrip bool, goCaps []string) bool {
	if len(chatCaps) > len(goCaps) {
		return !goRoundTrip || chatTemplateHasToolRoundTrip(chat)
	}
	same := len(chatCaps) == len(goCaps)
	for _, c := range chatCaps {
		same = same && contains(goCaps, c)
	}
	if !same || !contains(chatCaps, "tools") || !contains(goCaps, "tools") {
		return false
	}
	return chatTemplateHasToolRoundTrip(chat) && !goRoundTrip
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
	openingTag, closingTag := inferTags(tmpl)
	thinking := openingTag != "" && closingTag != ""
	caps := goTemplateCapabilities(vars, tmpl)
	renders := make([]render, 0, len(req.Cases))
	var replies []parsed
	for _, raw := range req.Cases {
		r := render{}
		switch req.Mode {
		case "data":
			var data map[string]any
			if err := json.Unmarshal(raw, &data); err != nil {
				fail("case is not an object: %v", err)
			}
			var out bytes.Buffer
			if err := tmpl.Execute(&out, data); err != nil {
				r.Error = err.Error()
			}
			r.Output = out.String()
		case "parse":
			var c parseCase
			if err := json.Unmarshal(raw, &c); err != nil {
				fail("case is not a reply to parse: %v", err)
			}
			think := thinking && (c.Think == nil || *c.Think) // ChatHandler: thinking models default to Think=true
			replies = append(replies, parseReply(tmpl, c, think))
			continue
		default:
			var c chatCase
			if err := json.Unmarshal(raw, &c); err != nil {
				fail("case is not a chat request: %v", err)
			}
			// ChatHandler (server/routes.go lines 2610-2640): tools need the tools capability (a TEMPLATE that
			// mentions .Tools), think=true the thinking capability; thinking models default to Think=true.
			if len(c.Tools) > 0 && !contains(caps, "tools") {
				r.Error = "does not support tools"
				renders = append(renders, r)
				continue
			}
			think, isThinkSet := false, false
			if c.Think != nil {
				think, isThinkSet = *c.Think, true
			} else if thinking {
				think, isThinkSet = true, true
			}
			if think && !thinking {
				r.Error = "does not support thinking"
				renders = append(renders, r)
				continue
			}
			msgs := c.Messages
			// ChatHandler: the Modelfile SYSTEM only when the request does not start with a system message.
			if len(msgs) > 0 && msgs[0].Role != "system" && req.System != "" {
				msgs = append([]message{{Role: "system", Content: req.System}}, msgs...)
			}
			out, err := execute(tmpl, vars, msgs, c.Tools, think, isThinkSet)
			r.Output = out
			if err != nil {
				r.Error = err.Error()
			}
		}
		renders = append(renders, r)
	}
	chatCaps := chatTemplateCapabilities(req.ChatTemplate)
	roundTrip := goTemplateHasToolRoundTrip(vars, req.Template)
	prefer := req.ChatTemplate != "" && shouldPreferChatTemplate(req.ChatTemplate, chatCaps, roundTrip, caps)
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(map[string]any{
		"renders": renders, "replies": replies, "uses_messages": contains(vars, "messages"), "thinking": thinking,
		"thinking_tags": []string{openingTag, closingTag}, "tool_tag": parseTag(tmpl), "capabilities": caps,
		"tool_round_trip": roundTrip, "chat_template_capabilities": chatCaps, "prefer_chat_template": prefer,
	}); err != nil {
		fail("writing stdout: %v", err)
	}
}
