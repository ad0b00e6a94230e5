"""The data layer: load chat data from files, the Hub, builtin tasks or chit-chat, validate it, mix it.

Typical use::

    from posttrain.data import DatasetSpec, load_conversations, fingerprint

    specs = [DatasetSpec(path="data/train.jsonl"), DatasetSpec(path="builtin:all", num_samples=500)]
    dataset = load_conversations(specs, test_split_size=0.05, seed=42)   # DatasetDict, one "messages" column
    manifest["data"] = fingerprint(dataset, specs)

    pairs = load_preferences([{"path": "prefs.jsonl"}, {"path": "builtin:all"}])  # prompt / chosen / rejected

Modules: :mod:`.spec` (what to load), :mod:`.formats` (row layouts -> messages), :mod:`.validation` (errors and
conversation rules), :mod:`.tools` (tool calls, reasoning, template variables), :mod:`.files` (local files),
:mod:`.chitchat` (real conversations), :mod:`.mixture` (fractions), :mod:`.loading` (putting it together,
fingerprints), :mod:`.preference` (preference pairs for reward models and DPO).
"""

from .chitchat import chitchat_conversations
from .files import SUPPORTED_EXTENSIONS, looks_local, resolve_local_files
from .formats import FORMATS, detect_format, to_messages
from .loading import MESSAGES_COLUMN, fingerprint, load_conversations, messages_features, source_kind
from .mixture import mixture_sizes
from .preference import (
    PREFERENCE_COLUMNS,
    PREFERENCE_FORMATS,
    PREFERENCE_FORMS,
    PreferenceSpec,
    detect_preference_form,
    load_preferences,
    preference_features,
    preference_fingerprint,
    to_preference,
    validate_preference,
    validate_prompt,
)
from .spec import BUILTIN_DEFAULT_SAMPLES, BUILTIN_PREFIX, CHITCHAT, DatasetSpec, Identity
from .tools import Conversation, normalize_conversation
from .validation import ALLOWED_ROLES, TOOL_ROLE, DataError, DataValidationError, ProblemCollector, validate_messages

__all__ = [
    "ALLOWED_ROLES",
    "BUILTIN_DEFAULT_SAMPLES",
    "BUILTIN_PREFIX",
    "CHITCHAT",
    "FORMATS",
    "MESSAGES_COLUMN",
    "PREFERENCE_COLUMNS",
    "PREFERENCE_FORMATS",
    "PREFERENCE_FORMS",
    "SUPPORTED_EXTENSIONS",
    "TOOL_ROLE",
    "Conversation",
    "DataError",
    "DataValidationError",
    "DatasetSpec",
    "Identity",
    "PreferenceSpec",
    "ProblemCollector",
    "chitchat_conversations",
    "detect_format",
    "detect_preference_form",
    "fingerprint",
    "load_conversations",
    "load_preferences",
    "looks_local",
    "messages_features",
    "mixture_sizes",
    "normalize_conversation",
    "preference_features",
    "preference_fingerprint",
    "resolve_local_files",
    "source_kind",
    "to_messages",
    "to_preference",
    "validate_messages",
    "validate_preference",
    "validate_prompt",
]
