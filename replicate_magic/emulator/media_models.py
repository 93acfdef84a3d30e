"""The emulated image, audio and vision models, with the Input and Output schemas Replicate serves.

Sources, per model (a property's place in the schema, its ``x-order``, is Cog's: the order of
the ``predict()`` arguments):

- stability-ai/sdxl: copied from the recorded ``GET /v1/models/stability-ai/sdxl`` in
  replicate-python tests/cassettes/models-get.yaml (version 39ed52f2…, cog 0.8.6), enums included.
- black-forest-labs/flux-schnell: types, bounds, defaults and ``x-order`` of the plain inputs from
  a copy of its schema quoted in a public repository ("Official Replicate API schema"); that copy
  flattens the three enum inputs, so their ``allOf`` form, default and description are rebuilt from
  Cog's rendering and nodetool-ai/nodetool-replicate's generated image/generate.py (version c846a699…).
- meta/musicgen: names, descriptions and defaults from nodetool-replicate's generated
  audio/generate.py (version 671ac645…); ``x-order`` reconstructed from cog-musicgen's argument order.
- yorickvp/llava-13b: from cog-llava's ``predict()`` signature (quoted in several public
  repositories) and nodetool-replicate's image/analyze.py (version 80537f9e…).
"""

from __future__ import annotations

from typing import Any

from .schema import EmulatedModel, enum_ref, prop

__all__ = ["MEDIA_MODELS", "URI_ARRAY", "URI"]

# File outputs: an array of URIs (sdxl's recorded Output) or one URI (a ``-> Path`` predictor).
URI_ARRAY: dict[str, Any] = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
URI: dict[str, Any] = {"type": "string", "format": "uri", "title": "Output"}

FLUX_ASPECT_RATIOS = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"]

FLUX_SCHNELL = EmulatedModel(
    owner="black-forest-labs",
    name="flux-schnell",
    description="The fastest image generation model tailored for local development and personal use",
    required=("prompt",),
    version_created_at="2024-07-30T00:32:11.473557Z",
    real_version="c846a69991daf4c0e5d016514849d14ee5b2e6846ce6b9d6f21369e564cfe51e",
    kind="image",
    output=URI_ARRAY,
    enums={"aspect_ratio": FLUX_ASPECT_RATIOS, "output_format": ["webp", "jpg", "png"],
           "megapixels": ["1", "0.25"]},
    properties={
        "prompt": prop(0, "string", "Prompt for generated image"),
        "aspect_ratio": enum_ref(1, "aspect_ratio", "Aspect ratio for the generated image", "1:1"),
        "num_outputs": prop(2, "integer", "Number of outputs to generate", default=1, maximum=4, minimum=1),
        "num_inference_steps": prop(
            3, "integer", "Number of denoising steps. 4 is recommended, and lower number of steps "
            "produce lower quality outputs, faster.", default=4, maximum=4, minimum=1),
        "seed": prop(4, "integer", "Random seed. Set for reproducible generation"),
        "output_format": enum_ref(5, "output_format", "Format of the output images", "webp"),
        "output_quality": prop(
            6, "integer", "Quality when saving the output images, from 0 to 100. 100 is best quality, "
            "0 is lowest quality. Not relevant for .png outputs", default=80, maximum=100, minimum=0),
        "disable_safety_checker": prop(7, "boolean", "Disable safety checker for generated images.",
                                       default=False),
        "go_fast": prop(
            8, "boolean", "Run faster predictions with model optimized for speed (currently fp8 "
            "quantized); disable to run in original bf16. Note that outputs will not be deterministic "
            "when this is enabled, even if you set a seed.", default=True),
        "megapixels": enum_ref(9, "megapixels", "Approximate number of megapixels for generated image", "1"),
    },
)

SDXL = EmulatedModel(
    owner="stability-ai",
    name="sdxl",
    description="A text-to-image generative AI model that creates beautiful images",
    version_created_at="2023-11-06T23:13:07.906314Z",
    real_version="39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
    cog_version="0.8.6",
    kind="image",
    streams=False,  # its recorded predictions have urls get and cancel only
    output=URI_ARRAY,
    enums={"refine": ["no_refiner", "expert_ensemble_refiner", "base_image_refiner"],
           "scheduler": ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL",
                         "K_EULER", "PNDM"]},
    properties={
        "prompt": prop(0, "string", "Input prompt", default="An astronaut riding a rainbow unicorn"),
        "negative_prompt": prop(1, "string", "Input Negative Prompt", default=""),
        "image": prop(2, "string", "Input image for img2img or inpaint mode", format="uri"),
        "mask": prop(3, "string", "Input mask for inpaint mode. Black areas will be preserved, white "
                     "areas will be inpainted.", format="uri"),
        "width": prop(4, "integer", "Width of output image", default=1024),
        "height": prop(5, "integer", "Height of output image", default=1024),
        "num_outputs": prop(6, "integer", "Number of images to output.", default=1, maximum=4, minimum=1),
        "scheduler": enum_ref(7, "scheduler", "scheduler", "K_EULER"),
        "num_inference_steps": prop(8, "integer", "Number of denoising steps", default=50, maximum=500,
                                    minimum=1),
        "guidance_scale": prop(9, "number", "Scale for classifier-free guidance", default=7.5, maximum=50,
                               minimum=1),
        "prompt_strength": prop(10, "number", "Prompt strength when using img2img / inpaint. 1.0 "
                                "corresponds to full destruction of information in image",
                                default=0.8, maximum=1, minimum=0),
        "seed": prop(11, "integer", "Random seed. Leave blank to randomize the seed"),
        "refine": enum_ref(12, "refine", "Which refine style to use", "no_refiner"),
        "high_noise_frac": prop(13, "number", "For expert_ensemble_refiner, the fraction of noise to use",
                                default=0.8, maximum=1, minimum=0),
        "refine_steps": prop(14, "integer", "For base_image_refiner, the number of steps to refine, "
                             "defaults to num_inference_steps"),
        "apply_watermark": prop(
            15, "boolean", "Applies a watermark to enable determining if an image is generated in "
            "downstream applications. If you have other provisions for generating or deploying images "
            "safely, you can use this to disable watermarking.", default=True),
        "lora_scale": prop(16, "number", "LoRA additive scale. Only applicable on trained models.",
                           default=0.6, maximum=1, minimum=0),
        "replicate_weights": prop(17, "string", "Replicate LoRA weights to use. Leave blank to use the "
                                  "default weights."),
        "disable_safety_checker": prop(
            18, "boolean", "Disable safety checker for generated images. This feature is only available "
            "through the API. See https://replicate.com/docs/how-does-replicate-work#safety", default=False),
    },
)

MUSICGEN = EmulatedModel(
    owner="meta",
    name="musicgen",
    description="Generate music from a prompt or melody",
    version_created_at="2023-06-12T19:22:05.525230Z",
    real_version="671ac645ce5e552cc63a54a2bbff63fcf798043055d2dac5fc9e36a837eedcfb",
    kind="audio",
    streams=False,  # a `-> Path` predictor: nothing to stream (unverified for this version)
    output=URI,
    enums={"model_version": ["stereo-melody-large", "stereo-large", "melody-large", "large"],
           "normalization_strategy": ["loudness", "clip", "peak", "rms"],
           "output_format": ["wav", "mp3"]},
    properties={
        "model_version": enum_ref(0, "model_version", "Model to use for generation", "stereo-melody-large"),
        "prompt": prop(1, "string", "A description of the music you want to generate."),
        "input_audio": prop(
            2, "string", "An audio file that will influence the generated music. If `continuation` is "
            "`True`, the generated music will be a continuation of the audio file. Otherwise, the "
            "generated music will mimic the audio file's melody.", format="uri"),
        "duration": prop(3, "integer", "Duration of the generated audio in seconds.", default=8),
        "continuation": prop(
            4, "boolean", "If `True`, generated music will continue from `input_audio`. Otherwise, "
            "generated music will mimic `input_audio`'s melody.", default=False),
        "continuation_start": prop(5, "integer", "Start time of the audio file to use for continuation.",
                                   default=0, minimum=0),
        "continuation_end": prop(6, "integer", "End time of the audio file to use for continuation. If -1 "
                                 "or None, will default to the end of the audio clip.", minimum=0),
        "multi_band_diffusion": prop(
            7, "boolean", "If `True`, the EnCodec tokens will be decoded with MultiBand Diffusion. Only "
            "works with non-stereo models.", default=False),
        "normalization_strategy": enum_ref(8, "normalization_strategy", "Strategy for normalizing audio.",
                                           "loudness"),
        "top_k": prop(9, "integer", "Reduces sampling to the k most likely tokens.", default=250),
        "top_p": prop(10, "number", "Reduces sampling to tokens with cumulative probability of p. When set "
                      "to  `0` (default), top_k sampling is used.", default=0),
        "temperature": prop(11, "number", "Controls the 'conservativeness' of the sampling process. Higher "
                            "temperature means more diversity.", default=1),
        "classifier_free_guidance": prop(
            12, "integer", "Increases the influence of inputs on the output. Higher values produce "
            "lower-varience outputs that adhere more closely to inputs.", default=3),
        "output_format": enum_ref(13, "output_format", "Output format for generated audio.", "wav"),
        "seed": prop(14, "integer", "Seed for random number generator. If None or -1, a random seed will "
                     "be used."),
    },
)

LLAVA_13B = EmulatedModel(
    owner="yorickvp",
    name="llava-13b",
    description="Visual instruction tuning towards large language and vision models with GPT-4 level "
    "capabilities",
    required=("image", "prompt"),
    version_created_at="2023-10-09T16:27:51.777748Z",
    real_version="80537f9eead1a5bfa72d5ac6ea6414379be41d4d4f6679fd776e9535d1eb58bb",
    kind="vision",
    properties={
        "image": prop(0, "string", "Input image", format="uri"),
        "prompt": prop(1, "string", "Prompt to use for text generation"),
        "top_p": prop(2, "number", "When decoding text, samples from the top p percentage of most likely "
                      "tokens; lower to ignore less likely tokens", default=1, maximum=1, minimum=0),
        "temperature": prop(3, "number", "Adjusts randomness of outputs, greater than 1 is random and 0 is "
                            "deterministic", default=0.2, minimum=0),
        "max_tokens": prop(4, "integer", "Maximum number of tokens to generate. A word is generally 2-3 "
                           "tokens", default=1024, minimum=0),
    },
)

MEDIA_MODELS = (FLUX_SCHNELL, SDXL, MUSICGEN, LLAVA_13B)
