"""Open-vocabulary detector loader (Grounding DINO or OWLv2 through transformers) and batched detection."""

from __future__ import annotations

import logging
from typing import List, Sequence

import numpy as np
import torch

from vlclip_core.config import DetectorConfig
from vlclip_core.models.candidate import Candidate
from vlclip_core.models.device import pick_device, torch_dtype

log = logging.getLogger(__name__)


class Detector:
    """A transformers zero-shot detector with its processor; `detect` runs one prompt over a batch."""

    def __init__(
        self,
        kind: str,
        processor,
        model,
        device: torch.device,
        dtype: torch.dtype,
        box_threshold: float,
        text_threshold: float,
    ):
        self.kind = kind
        self.processor = processor
        self.model = model.eval()
        self.device = device
        self.dtype = dtype
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray], prompt: str) -> List[List[Candidate]]:
        """Candidates above the thresholds for each (h, w, 3) uint8 image, all with the same `prompt`.

        transformers mis-handles batches that mix prompts, so one call carries exactly one prompt.
        """
        if not len(images):
            return []
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        # torch warns on read-only arrays (np.frombuffer of the row's bytes): hand it writable copies
        inputs = self._inputs([img if img.flags.writeable else img.copy() for img in images], prompt)
        outputs = self.model(**inputs)
        for name in ("logits", "pred_boxes"):
            setattr(outputs, name, getattr(outputs, name).float())
        results = self._post_process(outputs, inputs, sizes)
        return [_candidates(r["boxes"], r["scores"], size) for r, size in zip(results, sizes)]

    def _inputs(self, images: list, prompt: str) -> dict:
        if self.kind == "owlv2":
            queries = [q.strip() for q in prompt.split(".") if q.strip()] or [prompt]
            inputs = self.processor(
                text=[queries] * len(images), images=images, return_tensors="pt", truncation=True
            )
        else:
            max_len = getattr(self.model.config, "max_text_len", 256)
            inputs = self.processor(
                images=images,
                text=[prompt] * len(images),
                return_tensors="pt",
                truncation=True,
                max_length=max_len,
            )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def _post_process(self, outputs, inputs: dict, sizes: list) -> list:
        if self.kind == "owlv2":
            return self.processor.image_processor.post_process_object_detection(
                outputs, threshold=self.box_threshold, target_sizes=sizes
            )
        return self.processor.post_process_grounded_object_detection(
            outputs,
            input_ids=inputs["input_ids"],
            threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            target_sizes=sizes,
        )


def load_detector(cfg: DetectorConfig, device: str = "auto") -> Detector:
    """Load the detector from a hub id or a local directory (the same `from_pretrained` call).

    Example: `load_detector(DetectorConfig(kind="grounding_dino", path="IDEA-Research/grounding-dino-tiny"))`.
    """
    torch_device = pick_device(device)
    dtype = torch_dtype(cfg.dtype, torch_device)
    processor_cls, model_cls = _classes(cfg.kind)
    try:
        processor = processor_cls.from_pretrained(cfg.path)
        model = model_cls.from_pretrained(cfg.path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise RuntimeError(f"cannot load detector {cfg.kind} from {cfg.path!r}: {err}") from err
    log.info("loaded detector %s from %s on %s (%s)", cfg.kind, cfg.path, torch_device, dtype)
    return Detector(
        cfg.kind,
        processor,
        model.to(torch_device),
        torch_device,
        dtype,
        cfg.box_threshold,
        cfg.text_threshold,
    )


def _classes(kind: str) -> tuple:
    if kind == "owlv2":
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        return Owlv2Processor, Owlv2ForObjectDetection
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    return AutoProcessor, AutoModelForZeroShotObjectDetection


def _candidates(boxes: torch.Tensor, scores: torch.Tensor, size: tuple) -> List[Candidate]:
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    normalised = (boxes.float().cpu() / scale).clamp_(0.0, 1.0).tolist()
    values = scores.float().cpu().tolist()
    return [Candidate(tuple(box), float(score)) for box, score in zip(normalised, values)]
