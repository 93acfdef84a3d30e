"""The emulated models: names, fixed version ids and Cog input schemas (pure data).

The text models are here; the image, audio and vision models in media_models.py.

Schemas mirror the real models' ``openapi_schema`` (research notes, Part 3):
same input names, types, defaults and bounds, so client code that maps generic
options onto a model's own keys meets the same variety as on Replicate.
"""

from __future__ import annotations

from .media_models import MEDIA_MODELS
from .schema import COG_VERSION, OUTPUT_SCHEMA, EmulatedModel, enum_ref
from .schema import prop as _prop

__all__ = ["EmulatedModel", "MODELS", "OUTPUT_SCHEMA", "COG_VERSION", "find_model", "find_version"]


def _llama(name: str, size: str) -> EmulatedModel:
    return EmulatedModel(
        owner="meta",
        name=name,
        description=f"A {size} parameter language model from Meta, fine tuned for chat completions",
        required=("prompt",),
        properties={
            "prompt": _prop(0, "string", "Prompt to send to the model."),
            "system_prompt": _prop(
                1,
                "string",
                "System prompt to send to the model. This is prepended to the prompt "
                "and helps guide system behavior.",
                default="You are a helpful assistant",
            ),
            "prompt_template": _prop(
                2,
                "string",
                "Template for formatting the prompt. Can be an arbitrary string, "
                "but must contain the substring `{prompt}`.",
                default="{prompt}",
            ),
            "max_tokens": _prop(
                3, "integer", "The maximum number of tokens the model should generate as output.",
                default=512,
            ),
            "min_tokens": _prop(
                4, "integer", "The minimum number of tokens the model should generate as output.",
                default=0,
            ),
            "temperature": _prop(
                5, "number", "The value used to modulate the next token probabilities.",
                default=0.6, minimum=0, maximum=5,
            ),
            "top_p": _prop(
                6, "number",
                "A probability threshold for generating the output. If < 1.0, only keep the "
                "top tokens with cumulative probability >= top_p (nucleus filtering).",
                default=0.9, minimum=0, maximum=1,
            ),
            "top_k": _prop(
                7, "integer",
                "The number of highest probability tokens to consider for generating the output.",
                default=50,
            ),
            "presence_penalty": _prop(8, "number", "Presence penalty", default=1.15),
            "frequency_penalty": _prop(9, "number", "Frequency penalty", default=0.2),
            "stop_sequences": _prop(
                10, "string",
                "A comma-separated list of sequences to stop generation at. For example, "
                "'<end>,<stop>' will stop generation at the first instance of 'end' or '<stop>'.",
                default="<|end_of_text|>,<|eot_id|>",
            ),
        },
    )


_MIXTRAL = EmulatedModel(
    owner="mistralai",
    name="mixtral-8x7b-instruct-v0.1",
    description="The Mixtral-8x7B-instruct-v0.1 Large Language Model (LLM) is a pretrained "
    "generative Sparse Mixture of Experts tuned to be a helpful assistant.",
    required=("prompt",),
    version_created_at="2023-12-11T17:12:48.518357Z",
    properties={
        "prompt": _prop(0, "string", "Prompt to send to the model."),
        "prompt_template": _prop(
            1, "string",
            "Template for formatting the prompt. Can be an arbitrary string, "
            "but must contain the substring `{prompt}`.",
            default="<s>[INST] {prompt} [/INST] ",
        ),
        "max_new_tokens": _prop(
            2, "integer", "The maximum number of tokens the model should generate as output.",
            default=512,
        ),
        "min_new_tokens": _prop(
            3, "integer", "The minimum number of tokens the model should generate as output.",
            default=-1,
        ),
        "temperature": _prop(
            4, "number", "The value used to modulate the next token probabilities.",
            default=0.6,
        ),
        "top_p": _prop(5, "number", "A probability threshold for generating the output.", default=0.9),
        "top_k": _prop(
            6, "integer",
            "The number of highest probability tokens to consider for generating the output.",
            default=50,
        ),
        "presence_penalty": _prop(7, "number", "Presence penalty", default=0),
        "frequency_penalty": _prop(8, "number", "Frequency penalty", default=0),
    },
)

_GPT4O_MINI = EmulatedModel(
    owner="openai",
    name="gpt-4o-mini",
    description="Low latency, low cost version of OpenAI's GPT-4o model",
    version_created_at="2025-05-01T16:04:21.412386Z",
    properties={
        "prompt": _prop(0, "string", "The prompt to send to the model. Do not use if using messages."),
        "messages": _prop(
            1, "array",
            "A JSON string representing a list of messages. For example: "
            '[{"role": "user", "content": "Hello, how are you?"}]. '
            "If provided, prompt and system_prompt are ignored.",
            items={"type": "object"}, default=[],
        ),
        "system_prompt": _prop(2, "string", "System prompt to set the assistant's behavior"),
        "image_input": _prop(
            3, "array", "List of images to send to the model",
            items={"type": "string", "format": "uri"}, default=[],
        ),
        "temperature": _prop(
            4, "number", "Sampling temperature between 0 and 2", default=1, minimum=0, maximum=2,
        ),
        "max_completion_tokens": _prop(
            5, "integer", "Maximum number of completion tokens to generate", default=4096,
        ),
        "top_p": _prop(
            6, "number", "Nucleus sampling parameter - the model considers the results of the "
            "tokens with top_p probability mass. (0.1 means only the tokens comprising the top "
            "10% probability mass are considered.)",
            default=1, minimum=0, maximum=1,
        ),
        "frequency_penalty": _prop(
            7, "number", "Frequency penalty parameter - positive values penalize the repetition "
            "of tokens.", default=0, minimum=-2, maximum=2,
        ),
        "presence_penalty": _prop(
            8, "number", "Presence penalty parameter - positive values penalize new tokens based "
            "on whether they appear in the text so far.", default=0, minimum=-2, maximum=2,
        ),
    },
)

_CLAUDE = EmulatedModel(
    owner="anthropic",
    name="claude-3.7-sonnet",
    description="The most intelligent Claude model and the first hybrid reasoning model on the market",
    required=("prompt",),
    version_created_at="2025-02-25T18:31:27.105943Z",
    properties={
        "prompt": _prop(0, "string", "Input prompt"),
        "system_prompt": _prop(1, "string", "System prompt", default=""),
        "image": _prop(
            2, "string",
            "Optional input image. Images are priced as (width px * height px)/750 input tokens",
            format="uri",
        ),
        "max_tokens": _prop(
            3, "integer", "Maximum number of output tokens", default=8192, minimum=1024, maximum=64000,
        ),
        "max_image_resolution": _prop(
            4, "number",
            "Maximum image resolution in megapixels. Scales down image before sending it to Claude, "
            "to save time and money.",
            default=0.5, minimum=0.001, maximum=2,
        ),
    },
)

# openai/gpt-5-structured, the structured-output model (its API page, version fc1375c8): the answer's
# JSON Schema goes in `json_schema`, wrapped as OpenAI's Responses API wants it,
# {"format": {"type": "json_schema", "name": ..., "schema": {...}}}; the system prompt is
# `instructions`, the length limit `max_output_tokens`. Its `tools`, `input_item_list` and
# `previous_response_id` are left out, and its output is emulated as the text stream every
# text model here has (the real model's output schema was not recorded). The emulator answers
# `json_schema` with JSON that follows the schema (json_mode.py).
_GPT5_STRUCTURED = EmulatedModel(
    owner="openai",
    name="gpt-5-structured",
    description="GPT-5 with support for structured outputs, web search and custom tools",
    version_created_at="2025-08-27T21:32:48.228531Z",
    enums={"model": ["gpt-5", "gpt-5-mini", "gpt-5-nano"],
           "reasoning_effort": ["minimal", "low", "medium", "high"],
           "verbosity": ["low", "medium", "high"]},
    properties={
        "model": enum_ref(0, "model", "GPT-5 model to use.", "gpt-5"),
        "prompt": _prop(
            1, "string", "A simple text input to the model, equivalent to a text input with the user role. "
            "Ignored if input_item_list is provided."),
        "instructions": _prop(
            2, "string", "A system (or developer) message inserted into the model's context."),
        "image_input": _prop(
            3, "array", "List of images to send to the model", items={"type": "string", "format": "uri"},
            default=[]),
        "reasoning_effort": enum_ref(
            4, "reasoning_effort", "Constrains effort on reasoning for GPT-5 models.", "minimal"),
        "verbosity": enum_ref(5, "verbosity", "Constrains the verbosity of the model's response.", "medium"),
        "enable_web_search": _prop(6, "boolean", "Allow GPT-5 to use web search for the response.", default=False),
        "simple_schema": _prop(
            7, "array", "Create a JSON schema for the output to conform to. The schema will be created from a "
            "simple list of field specifications.", items={"type": "string"}, default=[]),
        "json_schema": _prop(
            8, "object", "A JSON schema that the response must conform to. Must be wrapped: "
            '{"format": {"type": "json_schema", "name": ..., "schema": {...}}}', default={}),
        "max_output_tokens": _prop(9, "integer", "Maximum number of output tokens to generate."),
    },
)

# meta/llama-2-70b-chat as Replicate recorded it (replicate-python tests/cassettes/
# predictions-stream.yaml, version of 2023-09-13): its temperature starts at 0.01, not 0.
_LLAMA2_70B_CHAT = EmulatedModel(
    owner="meta",
    name="llama-2-70b-chat",
    description="A 70 billion parameter language model from Meta, fine tuned for chat completions",
    required=("prompt",),
    version_created_at="2023-09-13T15:41:34.688650Z",
    properties={
        "prompt": _prop(0, "string", "Prompt to send to the model."),
        "system_prompt": _prop(
            1, "string",
            "System prompt to send to the model. This is prepended to the prompt and helps guide "
            "system behavior.",
            default="You are a helpful assistant.",
        ),
        "max_new_tokens": _prop(
            2, "integer", "Maximum number of tokens to generate. A word is generally 2-3 tokens",
            default=128, minimum=1.0,
        ),
        "min_new_tokens": _prop(
            3, "integer",
            "Minimum number of tokens to generate. To disable, set to -1. A word is generally 2-3 tokens.",
            default=-1, minimum=-1.0,
        ),
        "temperature": _prop(
            4, "number",
            "Adjusts randomness of outputs, greater than 1 is random and 0 is deterministic, 0.75 is a "
            "good starting value.",
            default=0.75, maximum=5.0, minimum=0.01,
        ),
        "top_p": _prop(
            5, "number",
            "When decoding text, samples from the top p percentage of most likely tokens; lower to "
            "ignore less likely tokens",
            default=0.9, maximum=1.0, minimum=0.0,
        ),
        "top_k": _prop(
            6, "integer",
            "When decoding text, samples from the top k most likely tokens; lower to ignore less "
            "likely tokens",
            default=50, minimum=0.0,
        ),
        "stop_sequences": _prop(
            7, "string",
            "A comma-separated list of sequences to stop generation at. For example, '<end>,<stop>' "
            "will stop generation at the first instance of 'end' or '<stop>'.",
        ),
        "seed": _prop(8, "integer", "Random seed. Leave blank to randomize the seed"),
        "debug": _prop(9, "boolean", "provide debugging output in logs", default=False),
        "replicate_weights": _prop(
            10, "string", "Path to fine-tuned weights produced by a Replicate fine-tune job.",
        ),
    },
)


MODELS: dict[str, EmulatedModel] = {
    m.ref: m
    for m in (
        _llama("meta-llama-3-70b-instruct", "70 billion"),
        _llama("meta-llama-3-8b-instruct", "8 billion"),
        _MIXTRAL,
        _GPT4O_MINI,
        _CLAUDE,
        _LLAMA2_70B_CHAT,
        _GPT5_STRUCTURED,
        *MEDIA_MODELS,
    )
}


def find_model(owner: str, name: str) -> EmulatedModel | None:
    return MODELS.get(f"{owner}/{name}")


def find_version(version_id: str) -> EmulatedModel | None:
    for model in MODELS.values():
        if model.version_id == version_id:
            return model
    return None
