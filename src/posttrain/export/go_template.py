"""Jinja chat template → Go ``text/template`` for an Ollama Modelfile ``TEMPLATE``.

The translator walks the jinja2 AST of the tokenizer's template (parsed exactly as transformers compiles it:
``trim_blocks``, ``lstrip_blocks``, loop controls), so Jinja's whitespace control is already applied to the text
and the Go template can reproduce the Jinja rendering byte for byte. It covers the constructs chat templates are
made of:

* text, ``{{ ... }}`` output of strings and ``+``/``~`` concatenations, ``{% if/elif/else %}``, ``{% set %}``
  (also inside ``if`` blocks: variables are declared at the start of their Jinja scope), ``{% for m in ... %}`` with
  ``loop.first``/``loop.last``/``loop.index0``, ``break``/``continue``, ``x if c else y`` in output;
* ``messages`` (→ ``$.Messages``), ``message['role']``/``message.content`` (→ ``.Role``/``.Content``),
  ``messages[0]``, ``messages[1:]``, ``| length``, ``==``, ``!=``, ``<`` ..., ``and``/``or``/``not``;
* Jinja tests (``is defined``, ``is undefined``, ``is none``, ``is string``, ``is mapping``, ``is iterable``,
  ``is sequence``, ``is number``, ``is true``/``is false``...), decided by Jinja's own test functions on values
  known at translation time and on values whose *type* Go's data decides (a message's role and content are strings,
  a message a mapping, ``loop.index0`` a number; ``add_generation_prompt is defined`` always, even where the
  template sets it); ``is true``/``is false`` of a dynamic boolean become Go conditions. A test on a variable whose
  type is only known when the template runs, a test with an argument or an unknown test raises;
* ``{% set ns = namespace(a=...) %}`` and ``{% set ns.a = ... %}``: each attribute is a Go variable declared in the
  namespace's scope and assigned from the loops inside it (Go allows that), e.g. DeepSeek-V3's joined system
  prompt and tool-state flags;
* ``x | trim`` where it is printed (Python's ``str.strip()``, built as a recursive ``{{ define }}`` from
  ``slice``/``len``/``eq``: :data:`posttrain.export.known_templates.TRIM_DEFINE`); a trimmed value inside a
  ``{% set %}``, a comparison or a concatenation that is not printed directly is refused (Go cannot capture a
  template's output);
* ``bos_token``/``eos_token`` and other special tokens (inlined as constants), ``add_generation_prompt``: Ollama
  has no such flag; like Ollama's own templates the Go template adds the generation prompt when the last message
  is not the assistant's. A trailing assistant message (a prefill) is closed like any other turn by a translated
  template, whereas Jinja's ``continue_final_message`` leaves it open: the known family templates
  (:mod:`~posttrain.export.known_templates`) leave it open, translations do not (the verification shows it).

Variables a chat request does not set are what ``apply_chat_template(messages, add_generation_prompt=...)`` makes
them: ``tools`` and ``documents`` are None, ``message.tool_calls`` and other names are undefined; conditions on them
are decided at translation time and the branches that cannot run are dropped. Anything else -- macros, a namespace
attribute holding a message or list, method calls such as ``.strip()``, filters other than ``length`` and ``trim``,
negative indices, ``in`` -- raises :class:`TemplateTranslationError` naming the construct and its line; the export
then writes a Modelfile without ``TEMPLATE`` that relies on the Jinja template kept in the GGUF's metadata.

The data passed to the Go template is shaped like Ollama's (:func:`ollama_values`): ``Messages`` (a list of
``{Role, Content}``) and ``System``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from jinja2 import nodes

__all__ = ["GoTemplate", "TemplateTranslationError", "ollama_values", "translate"]


class TemplateTranslationError(ValueError):
    """A Jinja construct with no Go ``text/template`` equivalent here; the message names it and its line."""


class _Undefined:
    """A Jinja variable the chat request does not define: falsy, renders as ''."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "Undefined"


UNDEFINED = _Undefined()
_DYNAMIC = object()  # marks an expression whose value is only known when the template runs
MESSAGE_FIELDS = {"role": "Role", "content": "Content"}
#: variables ``apply_chat_template`` always passes, as None when a request has no tools/documents
PASSED_AS_NONE = ("tools", "documents")


@dataclass
class _Expr:
    """A translated expression: Go pipeline text (``go``), a value known at translation time (``static``), kind."""

    go: str | None = None
    static: Any = _DYNAMIC
    kind: str = "value"  # value | messages | message | loop | namespace | trimmed
    #: the Jinja type of a dynamic value when Go's data decides it (:data:`_TYPE_SAMPLES`), for ``is string``...
    type: str | None = None

    @property
    def is_static(self) -> bool:
        return self.static is not _DYNAMIC


#: a Python value of each type a template value can have, for Jinja's own tests (``jinja2.tests.TESTS``) to decide
#: ``is string``, ``is mapping``... on a value whose type, not value, is known at translation time
_TYPE_SAMPLES: dict[str, Any] = {
    "none": None,
    "boolean": False,
    "number": 0,
    "string": "",
    "sequence": [],
    "mapping": {},
}
#: Jinja tests whose result depends only on the type of the value
_TYPE_TESTS = frozenset(
    ("defined", "undefined", "none", "string", "mapping", "iterable", "sequence", "number", "integer", "float")
    + ("boolean", "callable")
)


def _static_type(value: Any) -> str:
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number"
    return "string"


def _jinja_value(value: Any) -> Any:
    import jinja2

    return jinja2.Undefined() if value is UNDEFINED else value


@dataclass
class _Loop:
    index: str  # Go variable holding the 0-based index
    collection: str  # Go pipeline of the iterated collection


@dataclass
class _Scope:
    variables: dict[str, str] = field(default_factory=dict)  # jinja name -> kind
    loop: _Loop | None = None


@dataclass
class GoTemplate:
    """A translated template and the notes a user should read (dropped ``raise_exception`` calls...)."""

    text: str
    notes: list[str] = field(default_factory=list)


def _go_string(value: str) -> str:
    """A Go interpreted string literal (JSON string syntax is valid Go; non-ASCII stays raw UTF-8)."""
    return json.dumps(value, ensure_ascii=False)


def _text(value: str) -> str:
    """Literal template text; the only sequence Go would read as an action is ``{{``."""
    return '{{"{{"}}'.join(value.split("{{"))


def _parse(source: str):
    from transformers.utils.chat_template_utils import _compile_jinja_template

    template = _compile_jinja_template(source)
    return template.environment.parse(source)


class _Translator:
    def __init__(self, constants: dict[str, str]):
        self.constants = constants
        self.scopes: list[_Scope] = [_Scope()]
        self.notes: list[str] = []
        self.loops = 0
        self.uses_trim = False
        #: per variable (``name``, or ``ns.attr`` for a namespace attribute): how many ``set``s the template has,
        #: how many were translated or dropped so far, and the types of the values translated ones assign
        self.assigns_total: dict[str, int] = {}
        self.assigns_seen: dict[str, int] = {}
        self.assigned_types: dict[str, set[str | None]] = {}
        #: namespace name -> the attributes it is created with or ever given (``{% set ns.attr = ... %}``)
        self.namespaces: dict[str, set[str]] = {}

    # ------------------------------------------------------------------ helpers

    def fail(self, node: nodes.Node, what: str) -> TemplateTranslationError:
        return TemplateTranslationError(
            f"line {getattr(node, 'lineno', '?')}: {what} has no Go text/template translation"
        )

    def lookup(self, name: str) -> str | None:
        for scope in reversed(self.scopes):
            if name in scope.variables:
                return scope.variables[name]
        return None

    def current_loop(self) -> _Loop | None:
        for scope in reversed(self.scopes):
            if scope.loop is not None:
                return scope.loop
        return None

    # ------------------------------------------------------------------ statements

    def template(self, tree: nodes.Template) -> str:
        for assign in tree.find_all(nodes.Assign):
            key = _assign_key(assign.target)
            if key is not None:
                self.assigns_total[key] = self.assigns_total.get(key, 0) + 1
            if isinstance(assign.target, nodes.NSRef):
                self.namespaces.setdefault(assign.target.name, set()).add(assign.target.attr)
            elif _namespace_call(assign.node) is not None:
                self.namespaces.setdefault(assign.target.name, set()).update(
                    kw.key for kw in _namespace_call(assign.node).kwargs
                )
        prelude = (
            "{{ $add_generation_prompt := true }}"
            '{{ range $.Messages }}{{ $add_generation_prompt = ne .Role "assistant" }}{{ end }}'
        )
        body = self.scope_body(tree.body, self.scopes[0])
        if self.uses_trim:  # Jinja's `| trim`, which Go's text/template lacks (known_templates.TRIM_DEFINE)
            from posttrain.export.known_templates import TRIM_DEFINE

            body += TRIM_DEFINE
        return prelude + body

    def scope_body(self, body: list[nodes.Node], scope: _Scope) -> str:
        """A Jinja scope (template or loop body): its ``set`` targets are declared first, so a ``set`` inside an
        ``if`` is visible after it, as in Jinja."""
        assigns: dict[str, list[nodes.Assign]] = {}
        for node in body:
            for assign in self._assigns(node):
                assigns.setdefault(assign.target.name, []).append(assign)
        declare = []
        for name, sets in assigns.items():
            if not _is_identifier(name):
                raise self.fail(body[0], f"variable name '{name}'")
            namespaces = [_namespace_call(assign.node) is not None for assign in sets]
            if any(namespaces):
                if not all(namespaces):
                    raise self.fail(sets[0], f"'{name}' set both to a namespace() and to another value")
                # a namespace's attributes are Go variables of this scope, assigned from any scope inside it
                scope.variables[name] = "namespace"
                for attr in sorted(self.namespaces[name]):
                    variable = self._attribute_variable(sets[0], name, attr)
                    declare.append(f'{{{{ {variable} := "" }}}}')
                continue
            # Until its `set` runs, the name keeps the value it has outside (e.g. `set messages = messages[1:]`).
            outer = self.expr_Name(nodes.Name(name, "load", lineno=body[0].lineno))
            initial = '""' if outer.is_static else outer.go
            scope.variables[name] = "value" if outer.is_static else outer.kind
            types = self.assigned_types.setdefault(name, set())
            if not _set_before_use(body, name):  # read before its first `set`: has the outer value's type then
                types.add(self._type_of(outer))
            declare.append(f"{{{{ ${name} := {initial} }}}}")
        return "".join(declare) + self.statements(body)

    def _attribute_variable(self, node: nodes.Node, namespace: str, attr: str) -> str:
        """The Go variable holding ``namespace.attr``."""
        if not _is_identifier(attr):
            raise self.fail(node, f"the namespace attribute name '{attr}'")
        return f"${namespace}_{attr}"

    def _variable_type(self, key: str) -> str | None:
        """The type of variable ``key`` (``name`` or ``ns.attr``) when every ``set`` of it was translated already
        and all of them (and its value before them) have the same type; None otherwise."""
        if self.assigns_seen.get(key, 0) < self.assigns_total.get(key, 0):
            return None  # a later `set` (e.g. further down a loop body) may give it another type
        types = self.assigned_types.get(key, set())
        return next(iter(types)) if len(types) == 1 else None

    def _assigned(self, key: str, type_: str | None) -> None:
        self.assigns_seen[key] = self.assigns_seen.get(key, 0) + 1
        self.assigned_types.setdefault(key, set()).add(type_)

    def skipped(self, body: list[nodes.Node]) -> None:
        """Statements dropped at translation time (a branch that cannot run): their ``set``s never happen."""
        for node in body:
            for assign in [*([node] if isinstance(node, nodes.Assign) else []), *node.find_all(nodes.Assign)]:
                key = _assign_key(assign.target)
                self.assigns_seen[key] = self.assigns_seen.get(key, 0) + 1

    def _defined_by_request(self, name: str) -> bool:
        """Whether ``apply_chat_template`` defines ``name`` for every chat request (a ``set`` cannot undefine it)."""
        return name in ("messages", "add_generation_prompt", *PASSED_AS_NONE) or name in self.constants

    def _type_of(self, value: _Expr) -> str | None:
        if value.is_static:
            return _static_type(value.static)
        if value.type is not None:
            return value.type
        return {"messages": "sequence", "message": "mapping", "trimmed": "string"}.get(value.kind)

    def _assigns(self, node: nodes.Node):
        if isinstance(node, nodes.Assign):
            if isinstance(node.target, nodes.NSRef):
                return  # `set ns.attr = ...`: the namespace's variables are declared where it is created
            if not isinstance(node.target, nodes.Name):
                raise self.fail(node, "{% set %} of a tuple or attribute")
            yield node
        elif isinstance(node, nodes.If):
            for child in [*node.body, *node.elif_, *node.else_]:
                yield from self._assigns(child)

    def statements(self, body: list[nodes.Node]) -> str:
        return "".join(self.statement(node) for node in body)

    def statement(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.Output):
            return "".join(self.output(child) for child in node.nodes)
        if isinstance(node, nodes.If):
            return self.if_(node)
        if isinstance(node, nodes.For):
            return self.for_(node)
        if isinstance(node, nodes.Assign):
            if isinstance(node.target, nodes.NSRef):
                return self.assign_attribute(node)
            call = _namespace_call(node.node)
            if call is not None:
                return self.create_namespace(node, call)
            value = self.expr(node.node)
            if value.kind == "namespace":
                raise self.fail(node, "a second name for a namespace()")
            self.scopes_set_kind(node.target.name, value.kind)
            self._assigned(node.target.name, self._type_of(value))
            return f"{{{{ ${node.target.name} = {self.pipeline(value, node)} }}}}"
        if isinstance(node, nodes.Break):
            return "{{ break }}"
        if isinstance(node, nodes.Continue):
            return "{{ continue }}"
        kind = type(node).__name__
        names = {
            "Macro": "{% macro %}",
            "CallBlock": "{% call %}",
            "FilterBlock": "{% filter %}",
            "AssignBlock": "{% set %}...{% endset %} block",
            "With": "{% with %}",
            "Include": "{% include %}",
            "Extends": "{% extends %}",
            "Block": "{% block %}",
            "Scope": "a scoped block",
            "ExprStmt": "{% do %}",
            "OverlayScope": "an overlay scope",
        }
        raise self.fail(node, names.get(kind, f"the statement {kind}"))

    def create_namespace(self, node: nodes.Assign, call: nodes.Call) -> str:
        """``{% set ns = namespace(a=1, ...) %}``: every attribute the template gives ``ns`` is a Go variable
        (declared at the start of the scope, :meth:`scope_body`), set here to its initial value (Jinja's
        ``set ns.a = ...`` inside loops then assigns the same Go variable, which Go allows across scopes)."""
        if call.args or call.dyn_args or call.dyn_kwargs:
            raise self.fail(node, "namespace() with positional or ** arguments")
        name = node.target.name
        self._assigned(name, "namespace")
        initial = {kw.key: kw.value for kw in call.kwargs}
        out = []
        for attr in sorted(self.namespaces[name]):
            value = self.expr(initial[attr]) if attr in initial else _Expr(static=UNDEFINED)
            if value.kind != "value":
                raise self.fail(node, f"a message or list kept in namespace attribute {name}.{attr}")
            self.assigned_types.setdefault(f"{name}.{attr}", set()).add(self._type_of(value))
            out.append(f"{{{{ {self._attribute_variable(node, name, attr)} = {self.pipeline(value, node)} }}}}")
        return "".join(out)

    def assign_attribute(self, node: nodes.Assign) -> str:
        """``{% set ns.attr = value %}`` on a namespace: assigns its Go variable."""
        name, attr = node.target.name, node.target.attr
        if self.lookup(name) != "namespace":
            raise self.fail(node, f"setting the attribute {name}.{attr} of something that is not a namespace()")
        value = self.expr(node.node)
        if value.kind != "value":
            raise self.fail(node, f"a message or list kept in namespace attribute {name}.{attr}")
        self._assigned(f"{name}.{attr}", self._type_of(value))
        return f"{{{{ {self._attribute_variable(node, name, attr)} = {self.pipeline(value, node)} }}}}"

    def scopes_set_kind(self, name: str, kind: str) -> None:
        for scope in reversed(self.scopes):
            if name in scope.variables:
                scope.variables[name] = kind
                return

    def if_(self, node: nodes.If) -> str:
        branches = [(node.test, node.body), *((elif_.test, elif_.body) for elif_ in node.elif_)]
        out, opened = [], False
        for k, (test, body) in enumerate(branches):
            condition = self.expr(test)
            if condition.is_static:
                if not condition.static:
                    self.skipped(body)
                    continue  # a branch that cannot run: dropped, untranslated
                rest = self.statements(body)
                for _, later in branches[k + 1 :]:
                    self.skipped(later)
                self.skipped(node.else_)
                if opened:
                    out.append("{{ else }}" + rest + "{{ end }}")
                    return "".join(out)
                return rest
            out.append(("{{ else if " if opened else "{{ if ") + self.pipeline(condition, test) + " }}")
            out.append(self.statements(body))
            opened = True
        if not opened:
            return self.statements(node.else_)  # every branch dropped
        if node.else_:
            out.append("{{ else }}" + self.statements(node.else_))
        out.append("{{ end }}")
        return "".join(out)

    def for_(self, node: nodes.For) -> str:
        if not isinstance(node.target, nodes.Name):
            raise self.fail(node, "a for loop over tuples (e.g. `for k, v in d.items()`)")
        if node.test is not None or node.recursive:
            raise self.fail(node, "a filtered or recursive for loop")
        collection = self.expr(node.iter)
        if collection.is_static:
            if not collection.static:  # iterating over an undefined/empty value: only the else branch runs
                self.skipped(node.body)
                return self.statements(node.else_)
            raise self.fail(node, "a for loop over a literal")
        if collection.kind != "messages":
            raise self.fail(node, "a for loop over something other than the messages")
        self.loops += 1
        index = f"$i{self.loops}" if self.loops > 1 else "$i"
        name = node.target.name
        if not _is_identifier(name):
            raise self.fail(node, f"loop variable name '{name}'")
        coll = self.pipeline(collection, node.iter)
        scope = _Scope(variables={name: "message"}, loop=_Loop(index=index, collection=coll))
        self.scopes.append(scope)
        try:
            body = self.scope_body(node.body, scope)
        finally:
            self.scopes.pop()
        out = f"{{{{ range {index}, ${name} := {coll} }}}}{body}"
        if node.else_:
            out += "{{ else }}" + self.statements(node.else_)
        return out + "{{ end }}"

    def output(self, node: nodes.Node) -> str:
        if isinstance(node, nodes.TemplateData):
            return _text(node.data)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "raise_exception":
            self.notes.append(
                f"line {node.lineno}: raise_exception(...) dropped: the Go template renders invalid conversations "
                "instead of refusing them"
            )
            return ""
        if isinstance(node, nodes.CondExpr):
            condition = self.expr(node.test)
            if condition.is_static:
                if condition.static:
                    return self.output(node.expr1)
                return self.output(node.expr2) if node.expr2 is not None else ""
            else_ = self.output(node.expr2) if node.expr2 is not None else ""
            return (
                f"{{{{ if {self.pipeline(condition, node.test)} }}}}{self.output(node.expr1)}"
                f"{{{{ else }}}}{else_}{{{{ end }}}}"
            )
        if isinstance(node, (nodes.Add, nodes.Concat)):  # string concatenation: output the parts in order
            parts = [node.left, node.right] if isinstance(node, nodes.Add) else node.nodes
            return "".join(self.output(part) for part in parts)
        value = self.expr(node)
        if value.is_static:
            if value.static is UNDEFINED or value.static is None:
                return ""
            return _text(str(value.static))  # Python's spelling, as Jinja prints it: True, False, 3
        if value.kind == "trimmed":
            self.uses_trim = True
            return f'{{{{ template "posttrain_trim" {value.go} }}}}'
        if value.kind in ("messages", "message", "loop", "namespace"):
            raise self.fail(node, "printing a message, list or namespace")
        if value.type == "boolean":  # Jinja prints Python's spelling
            return f"{{{{ if {value.go} }}}}True{{{{ else }}}}False{{{{ end }}}}"
        return f"{{{{ {value.go} }}}}"

    # ------------------------------------------------------------------ expressions

    def pipeline(self, value: _Expr, node: nodes.Node) -> str:
        if value.kind == "trimmed":
            raise self.fail(
                node, "`| trim` inside an expression or {% set %} (a Go template's output cannot be captured)"
            )
        if not value.is_static:
            return value.go
        static = value.static
        if isinstance(static, bool):
            return "true" if static else "false"
        if isinstance(static, int):
            return str(static)
        if isinstance(static, str):
            return _go_string(static)
        if static is UNDEFINED or static is None:
            return '""'  # falsy, renders as nothing
        raise self.fail(node, f"the value {static!r}")

    def expr(self, node: nodes.Node) -> _Expr:
        method = getattr(self, f"expr_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, _describe(node))
        return method(node)

    def expr_Const(self, node: nodes.Const) -> _Expr:
        if node.value is None or isinstance(node.value, (str, bool, int)):
            return _Expr(static=node.value)
        raise self.fail(node, f"the constant {node.value!r}")

    def expr_Name(self, node: nodes.Name) -> _Expr:
        name = node.name
        kind = self.lookup(name)
        if kind == "namespace":
            return _Expr(go=name, kind="namespace")
        if kind is not None:
            return _Expr(go=f"${name}", kind=kind, type=self._variable_type(name))
        if name == "messages":
            return _Expr(go="$.Messages", kind="messages")
        if name == "add_generation_prompt":
            return _Expr(go="$add_generation_prompt", type="boolean")
        if name == "loop":
            if self.current_loop() is None:
                raise self.fail(node, "`loop` outside a for loop")
            return _Expr(kind="loop")
        if name in self.constants:
            return _Expr(static=self.constants[name])
        if name in PASSED_AS_NONE:
            return _Expr(static=None)
        if name in ("raise_exception", "namespace", "strftime_now", "dict", "range", "cycler", "joiner", "lipsum"):
            raise self.fail(node, f"the function {name}()")
        return _Expr(static=UNDEFINED)

    def _attribute(self, node: nodes.Node, target: _Expr, key: str) -> _Expr:
        if target.kind == "loop":
            loop = self.current_loop()
            if key == "first":
                return _Expr(go=f"(eq {loop.index} 0)", type="boolean")
            if key == "last":
                return _Expr(go=f"(eq (len (slice {loop.collection} {loop.index})) 1)", type="boolean")
            if key == "index0":
                return _Expr(go=loop.index, type="number")
            raise self.fail(node, f"loop.{key}")
        if target.kind == "namespace":
            if key not in self.namespaces.get(target.go, ()):
                return _Expr(static=UNDEFINED)  # an attribute the template never gives it
            variable = self._attribute_variable(node, target.go, key)
            return _Expr(go=variable, type=self._variable_type(f"{target.go}.{key}"))
        if target.is_static:
            return _Expr(static=UNDEFINED)  # attribute of an undefined value
        if target.kind == "message":
            if key in MESSAGE_FIELDS:  # strings in Ollama's data (content "" when a message has none)
                return _Expr(go=f"{target.go}.{MESSAGE_FIELDS[key]}", type="string")
            return _Expr(static=UNDEFINED)  # tool_calls, reasoning_content...: not set by a chat request
        raise self.fail(node, f"the attribute '{key}' of {_describe(node)}")

    def expr_Getattr(self, node: nodes.Getattr) -> _Expr:
        return self._attribute(node, self.expr(node.node), node.attr)

    def expr_Getitem(self, node: nodes.Getitem) -> _Expr:
        target = self.expr(node.node)
        arg = node.arg
        if isinstance(arg, nodes.Slice):
            if target.kind != "messages" or arg.stop is not None or arg.step is not None:
                raise self.fail(node, "a slice other than messages[n:]")
            start = self.expr(arg.start) if arg.start is not None else _Expr(static=0)
            if not (start.is_static and isinstance(start.static, int) and start.static >= 0):
                raise self.fail(node, "a slice with a negative or computed start")
            return _Expr(go=f"(slice {target.go} {start.static})", kind="messages")
        key = self.expr(arg)
        if key.is_static and isinstance(key.static, str):
            return self._attribute(node, target, key.static)
        if key.is_static and isinstance(key.static, int) and not isinstance(key.static, bool):
            if target.kind != "messages":
                raise self.fail(node, "indexing something other than the messages")
            if key.static < 0:
                raise self.fail(node, f"the negative index [{key.static}] (Go templates have no arithmetic)")
            return _Expr(go=f"(index {target.go} {key.static})", kind="message")
        raise self.fail(node, "indexing with a computed key")

    def expr_Neg(self, node: nodes.Neg) -> _Expr:
        value = self.expr(node.node)
        if value.is_static and isinstance(value.static, int) and not isinstance(value.static, bool):
            return _Expr(static=-value.static)
        raise self.fail(node, "a negated expression")

    def expr_Compare(self, node: nodes.Compare) -> _Expr:
        operators = {"eq": "eq", "ne": "ne", "lt": "lt", "lteq": "le", "gt": "gt", "gteq": "ge"}
        left = self.expr(node.expr)
        parts = []
        for operand in node.ops:
            if operand.op not in operators:
                raise self.fail(node, f"the operator '{operand.op}'")
            right = self.expr(operand.expr)
            if left.is_static and right.is_static:
                value = _compare(operand.op, left.static, right.static)
                if value is None:
                    raise self.fail(node, f"comparing {left.static!r} with {right.static!r}")
                parts.append(_Expr(static=value))
            else:
                if (left.is_static and left.static is UNDEFINED) or (right.is_static and right.static is UNDEFINED):
                    raise self.fail(node, "comparing with an undefined variable")
                parts.append(
                    _Expr(
                        go=f"({operators[operand.op]} {self.pipeline(left, node)} {self.pipeline(right, node)})",
                        type="boolean",
                    )
                )
            left = right
        return self._and(parts, node)

    def _and(self, parts: list[_Expr], node: nodes.Node) -> _Expr:
        dynamic = []
        for part in parts:
            if part.is_static:
                if not part.static:
                    return _Expr(static=False)
            else:
                dynamic.append(part)
        if not dynamic:
            return _Expr(static=parts[-1].static if parts else True)
        if len(dynamic) == 1:
            return dynamic[0]
        types = {self._type_of(p) for p in dynamic}
        return _Expr(
            go=f"(and {' '.join(self.pipeline(p, node) for p in dynamic)})",
            type=types.pop() if len(types) == 1 else None,
        )

    def expr_And(self, node: nodes.And) -> _Expr:
        return self._and([self.expr(node.left), self.expr(node.right)], node)

    def expr_Or(self, node: nodes.Or) -> _Expr:
        left, right = self.expr(node.left), self.expr(node.right)
        if left.is_static:
            return left if left.static else right
        if right.is_static and not right.static:
            return left
        types = {self._type_of(left), self._type_of(right)}
        type_ = types.pop() if len(types) == 1 else None
        if right.is_static:  # truthy constant on the right: the whole is truthy, but its value depends on left
            return _Expr(go=f"(or {left.go} {self.pipeline(right, node)})", type=type_)
        return _Expr(go=f"(or {left.go} {right.go})", type=type_)

    def expr_Not(self, node: nodes.Not) -> _Expr:
        value = self.expr(node.node)
        if value.is_static:
            return _Expr(static=not value.static)
        return _Expr(go=f"(not {self.pipeline(value, node)})", type="boolean")

    def expr_Test(self, node: nodes.Test) -> _Expr:
        """``x is <test>`` decided by Jinja's own test function: on ``x``'s value when it is known at translation
        time, on a value of ``x``'s type when only the type is (``message.content is string``: contents are strings
        in Ollama's data); ``is true``/``is false`` of a dynamic boolean become Go conditions."""
        from jinja2.tests import TESTS

        if node.name not in TESTS or node.name in ("test", "filter", "escaped"):
            raise self.fail(node, f"the test 'is {node.name}'")
        if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise self.fail(node, f"the test 'is {node.name}' with an argument")
        value = self.expr(node.node)
        test = TESTS[node.name]
        request_variable = isinstance(node.node, nodes.Name) and self._defined_by_request(node.node.name)
        if node.name in ("defined", "undefined") and request_variable:  # also when the template sets it later
            return _Expr(static=node.name == "defined")
        if value.is_static:
            return _Expr(static=bool(test(_jinja_value(value.static))))
        type_ = self._type_of(value)
        if type_ == "boolean" and node.name in ("true", "false"):
            go = self.pipeline(value, node)
            return _Expr(go=go if node.name == "true" else f"(not {go})", type="boolean")
        if type_ is not None and node.name in _TYPE_TESTS | {"true", "false"}:
            sample = _jinja_value(UNDEFINED) if type_ == "undefined" else _TYPE_SAMPLES.get(type_)
            if type_ in _TYPE_SAMPLES or type_ == "undefined":
                return _Expr(static=bool(test(sample)))
        subject = f"'{node.node.name}'" if isinstance(node.node, nodes.Name) else "a value"
        if type_ is None and node.name in _TYPE_TESTS | {"true", "false"}:
            raise self.fail(
                node,
                f"the test 'is {node.name}' on {subject}, whose type is only known when the template runs (a "
                "variable set to values of different types, or set again later in a loop)",
            )
        raise self.fail(node, f"the test 'is {node.name}' on {subject}, a value only known when the template runs")

    def expr_Filter(self, node: nodes.Filter) -> _Expr:
        value = self.expr(node.node)
        if node.name == "length" and not node.args:
            if value.is_static and isinstance(value.static, str):
                return _Expr(static=len(value.static))
            if value.kind != "messages" and value.is_static:
                raise self.fail(node, "`| length` of an undefined value")
            return _Expr(go=f"(len {value.go})", type="number")
        if node.name == "trim" and not node.args and not node.kwargs:
            if value.is_static:
                return _Expr(static="" if value.static in (None, UNDEFINED) else str(value.static).strip())
            if value.kind != "value":
                raise self.fail(node, "`| trim` of a message or list")
            return _Expr(go=value.go, kind="trimmed")  # printable only: {{ template "posttrain_trim" ... }}
        raise self.fail(node, f"the filter '| {node.name}'")

    def _concat(self, node: nodes.Node, parts: list[nodes.Node]) -> _Expr:
        values = [self.expr(part) for part in parts]
        if all(v.is_static and isinstance(v.static, str) for v in values):
            return _Expr(static="".join(v.static for v in values))
        for value in values:
            if value.kind == "trimmed":
                self.pipeline(value, node)  # raises: a trimmed value can only be printed
            if value.kind != "value" or (value.is_static and not isinstance(value.static, str)):
                raise self.fail(node, "concatenating something that is not a string")
        return _Expr(go=f"(print {' '.join(self.pipeline(v, node) for v in values)})", type="string")

    def expr_Add(self, node: nodes.Add) -> _Expr:
        return self._concat(node, [node.left, node.right])

    def expr_Concat(self, node: nodes.Concat) -> _Expr:
        return self._concat(node, list(node.nodes))


def _assign_key(target: nodes.Node) -> str | None:
    """What a ``{% set %}`` assigns: ``name``, or ``ns.attr`` for a namespace attribute."""
    if isinstance(target, nodes.Name):
        return target.name
    if isinstance(target, nodes.NSRef):
        return f"{target.name}.{target.attr}"
    return None


def _set_before_use(body: list[nodes.Node], name: str) -> bool:
    """Whether ``body`` sets ``name`` unconditionally (a ``set`` directly in it) before anything reads it."""
    for node in body:
        if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name) and node.target.name == name:
            return not any(n.name == name and n.ctx == "load" for n in node.node.find_all(nodes.Name))
        if any(n.name == name and n.ctx == "load" for n in node.find_all(nodes.Name)):
            return False
    return False


def _namespace_call(node: nodes.Node) -> nodes.Call | None:
    """``node`` when it is a call of ``namespace(...)``."""
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "namespace":
        return node
    return None


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and name.isascii()


def _compare(op: str, left: Any, right: Any) -> bool | None:
    if left is UNDEFINED or right is UNDEFINED:
        return (left is right) if op == "eq" else (left is not right) if op == "ne" else None
    try:
        return {
            "eq": left == right,
            "ne": left != right,
            "lt": left < right,
            "lteq": left <= right,
            "gt": left > right,
            "gteq": left >= right,
        }[op]
    except TypeError:
        return None


def _describe(node: nodes.Node) -> str:
    if isinstance(node, nodes.Call):
        target = node.node
        if isinstance(target, nodes.Getattr):
            return f"the method call .{target.attr}()"
        if isinstance(target, nodes.Name):
            return f"the function call {target.name}()"
        return "a function call"
    names = {
        "List": "a list literal",
        "Dict": "a dict literal",
        "Tuple": "a tuple",
        "Sub": "arithmetic (-)",
        "Mul": "arithmetic (*)",
        "Div": "arithmetic (/)",
        "FloorDiv": "arithmetic (//)",
        "Mod": "arithmetic (%)",
        "Pow": "arithmetic (**)",
        "Neg": "a negative number",
        "CondExpr": "an inline if/else inside an expression",
        "NSRef": "a namespace attribute",
        "Slice": "a slice",
    }
    return names.get(type(node).__name__, f"the expression {type(node).__name__}")


def translate(source: str, *, constants: dict[str, str] | None = None) -> GoTemplate:
    """Translate a Jinja chat template into a Go template for Ollama.

    ``constants`` are the special-token variables the template may print (``bos_token``, ``eos_token``...).
    Raises :class:`TemplateTranslationError` naming the first construct that has no translation.
    """
    translator = _Translator(dict(constants or {}))
    text = translator.template(_parse(source))
    return GoTemplate(text=text, notes=translator.notes)


def ollama_messages(messages: list[dict], system: str | None = None) -> list[dict]:
    """The messages Ollama hands a template for a chat request: the Modelfile ``SYSTEM`` first when the request does
    not start with a system message (``server/routes.go`` ``ChatHandler``), then consecutive messages of one role
    joined with a blank line (``template/template.go`` ``collate``: only the content is joined, the first message
    keeps its other fields; tool messages stay apart). Tool calls, tool results' ``name``/``tool_call_id`` and
    ``reasoning_content`` are kept (posttrain's normalised fields, :mod:`posttrain.data.tools`). The Jinja reference
    renders these, so both sides see the same conversation."""
    extras = ("tool_calls", "tool_call_id", "name", "reasoning_content")
    messages = [
        {"role": m["role"], "content": m.get("content") or "", **{k: m[k] for k in extras if m.get(k) is not None}}
        for m in messages
    ]
    if messages and messages[0]["role"] != "system" and system:
        messages.insert(0, {"role": "system", "content": system})
    collated: list[dict] = []
    for message in messages:
        if collated and collated[-1]["role"] == message["role"] and message["role"] != "tool":
            collated[-1] = {**collated[-1], "content": collated[-1]["content"] + "\n\n" + message["content"]}
        else:
            collated.append(dict(message))
    return collated


def ollama_values(messages: list[dict], system: str | None = None) -> dict[str, Any]:
    """The data Ollama passes to a template that ranges over ``.Messages`` (``template/template.go``
    ``Execute``): ``Messages`` collated (:func:`ollama_messages`) and ``System``, every system message joined with a
    blank line (they stay in ``Messages`` too)."""
    collated = ollama_messages(messages, system)
    system_text = "\n\n".join(m["content"] for m in collated if m["role"] == "system")
    return {
        "Messages": [{"Role": m["role"], "Content": m["content"]} for m in collated],
        "System": system_text,
        "Prompt": "",
        "Response": "",
    }


def filter_think_tags(messages: list[dict]) -> list[dict]:
    """Ollama's ``filterThinkTags`` (``server/routes.go``, applied for the ``qwen3`` model family): assistant
    messages before the last user message lose a leading ``<think>...</think>`` block and the whitespace after it
    (``thinking/parser.go`` ``eat``; Qwen3's Jinja strips only newlines there)."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    out = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and i < last_user:
            message = {**message, "content": _strip_thinking(message.get("content") or "")}
        out.append(message)
    return out


def _strip_thinking(content: str, opening: str = "<think>", closing: str = "</think>") -> str:
    trimmed = content.lstrip()
    if trimmed.startswith(opening):
        after = trimmed.split(opening, 1)[1].lstrip()
        return after.split(closing, 1)[1].lstrip() if closing in after else ""
    if opening.startswith(trimmed):  # empty, whitespace or a partial tag: all held back as possible thinking
        return ""
    return content


@dataclass
class Comparison:
    """The Go template rendered as Ollama renders it vs. the Jinja template, over conversations x SYSTEM x think."""

    checked: int = 0
    equal: int = 0
    #: equal once the JSON objects in both texts are compared parsed (tool schemas and call arguments: Go writes
    #: compact JSON in struct order, Jinja's tojson ", "/": " in dict order); counted in ``equal`` too
    equal_modulo_json: int = 0
    not_applicable: list[dict] = field(default_factory=list)  # the Jinja template refuses the conversation
    differences: list[dict] = field(default_factory=list)
    doubled_bos: int = 0
    #: prefills the Go template closes (Jinja's rendering without continue_final_message): what a translated
    #: template does; reported, not failed, since Ollama then starts a new turn instead of continuing the message
    prefill_closed: int = 0
    uses_messages: bool = True
    thinking: bool = False
    capabilities: list[str] = field(default_factory=list)  # what Ollama reads off the Go template
    tool_tag: str = "{"

    @property
    def passed(self) -> bool:
        return self.checked > 0 and self.equal + self.prefill_closed == self.checked and not self.doubled_bos


def json_segments(text: str) -> list:
    """``text`` split into literal text and the JSON objects in it (parsed): two renderings that differ only in how
    the same JSON objects are written give equal segment lists. A ``{`` that does not start a JSON object (such as
    the ``{"name": <function-name>, ...}`` placeholder of tool prompts) stays text."""
    decoder = json.JSONDecoder()
    segments: list = []
    literal, i = [], 0
    while i < len(text):
        if text[i] == "{":
            try:
                value, end = decoder.raw_decode(text, i)
            except ValueError:
                value, end = None, i
            if isinstance(value, dict):
                segments.append("".join(literal))
                segments.append(("json", value))
                literal, i = [], end
                continue
        literal.append(text[i])
        i += 1
    segments.append("".join(literal))
    return segments


def _case(conversation) -> tuple[list[dict], list[dict] | None, str | None]:
    """A conversation given as its messages, or as ``{"messages", "tools", "name"}``."""
    if isinstance(conversation, dict):
        return conversation["messages"], conversation.get("tools"), conversation.get("name")
    return conversation, None, None


def compare_with_jinja(
    go_template: str,
    render_jinja,
    conversations: list,
    *,
    systems: tuple[str | None, ...] = (None,),
    bos_token: str | None = None,
    adds_bos: bool = False,
    model_family: str | None = None,
) -> Comparison:
    """Render every conversation the way Ollama would (:func:`posttrain.export.gorender.render_ollama`, plus the
    BOS the runner adds when ``adds_bos``) and compare with ``render_jinja(messages, add_generation_prompt=...,
    continue_final_message=..., [tools=...,] **kwargs)`` on :func:`ollama_messages` (plus the BOS the tokenizer
    adds when the Jinja text has none). A conversation is a list of messages or ``{"messages", "tools", "name"}``
    (a request with tools; messages may carry tool calls, tool results and ``reasoning_content``).

    Equality is byte for byte, except for JSON objects (tool schemas, call arguments): Go's ``json.Marshal`` writes
    them compact, in struct order, with map keys sorted and ``<>&`` escaped, Python's ``tojson`` with ", "/": "
    and in dict order, so a rendering that differs from Jinja's is compared again with every JSON object in both
    texts parsed (:func:`json_segments`): equal text between them and equal parsed objects count as equal
    (``equal_modulo_json``). A trailing assistant message is a prefill: Jinja renders it with
    ``continue_final_message=True``. A template with thinking tags is also checked with ``think: false`` against
    ``enable_thinking=False``. ``model_family`` ``qwen3``: Ollama's ``filterThinkTags`` runs on what is sent."""
    from posttrain.export.gorender import render_ollama

    result = Comparison()
    prefix = bos_token if (adds_bos and bos_token) else ""
    cases = [_case(c) for c in conversations]
    sent_conversations = [c[0] for c in cases]
    if model_family == "qwen3":
        sent_conversations = [filter_think_tags(c) for c in sent_conversations]
    tools = [c[1] for c in cases]
    for system in systems:
        first = render_ollama(go_template, sent_conversations, system=system, tools=tools)
        result.uses_messages, result.thinking = first.uses_messages, first.thinking
        result.capabilities, result.tool_tag = first.capabilities, first.tool_tag
        runs = [(None, first)]
        if first.thinking:
            no_think = [False] * len(cases)
            runs.append(
                (False, render_ollama(go_template, sent_conversations, system=system, think=no_think, tools=tools))
            )
        for think, renders in runs:
            for (conversation, case_tools, name), (output, error) in zip(cases, renders.renders):
                messages = ollama_messages(conversation, system)
                prefill = messages[-1]["role"] == "assistant"
                kwargs = {} if think is None else {"enable_thinking": think}
                if case_tools:
                    kwargs["tools"] = case_tools
                try:
                    jinja = render_jinja(
                        messages, add_generation_prompt=not prefill, continue_final_message=prefill, **kwargs
                    )
                except Exception as err:  # the template refuses it (raise_exception, roles that do not alternate)
                    result.not_applicable.append(
                        {"case": name, "messages": messages, "reason": f"{type(err).__name__}: {err}"}
                    )
                    continue
                if prefix and not jinja.startswith(prefix):
                    jinja = prefix + jinja  # the tokenizer adds BOS to a text without one, as llama.cpp does
                sent = prefix + output
                result.checked += 1
                if prefix and sent.startswith(prefix + prefix):
                    result.doubled_bos += 1
                if sent == jinja and not error:
                    result.equal += 1
                elif not error and json_segments(sent) == json_segments(jinja):
                    result.equal += 1
                    result.equal_modulo_json += 1
                elif prefill and not error and sent == _closed(render_jinja, messages, prefix, kwargs):
                    result.prefill_closed += 1
                else:
                    result.differences.append(
                        {
                            "case": name,
                            "messages": messages,
                            "tools": case_tools,
                            "system": system,
                            "think": think,
                            "jinja": jinja,
                            "ollama": sent,
                            "error": error,
                        }
                    )
    return result


def _closed(render_jinja, messages, prefix: str, kwargs: dict) -> str | None:
    try:
        text = render_jinja(messages, add_generation_prompt=False, continue_final_message=False, **kwargs)
    except Exception:
        return None
    return text if (not prefix or text.startswith(prefix)) else prefix + text
