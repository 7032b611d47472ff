"""The JSON bodies of the HTTP API, as Pydantic models: they validate the answers and give the
OpenAPI document (``/openapi.json``) its schemas."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable name of the error, e.g. `unsupported_media_type`.")
    message: str = Field(description="What went wrong, in one sentence.")
    hint: str | None = Field(None, description="What to do about it.")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer has this body."""

    error: ErrorDetail


class PredictionRecord(BaseModel):
    frame: int | None = Field(None, description="Frame number (from 1) of a multi-frame DICOM file, or slice number "
                                                "(from 1) of a NIfTI volume along its slice axis; null otherwise.")
    label: str = Field(description="The predicted class, or `not_brain_mri` when the image is rejected.")
    top_class: str = Field(description="The class of highest probability, even for a rejected image.")
    probabilities: dict[str, float] = Field(description="Calibrated probability of each class (they sum to 1).")
    accepted: bool | None = Field(None, description="The out-of-distribution decision; null for a model without a detector.")
    ood_score: float | None = Field(None, description="Out-of-distribution score; above the model's threshold the image is rejected.")
    reason: str | None = Field(None, description="Why the image was rejected.")
    warnings: list[str] = Field(default_factory=list, description="What a reader of this result should know.")


class ExplainedRecord(PredictionRecord):
    explained_class: str = Field(description="The class the heatmap shows the evidence for.")
    image_png: str = Field(description="The image as the network sees it (cropped, padded, resized), PNG in base64.")
    heatmap_png: str = Field(description="The Grad-CAM heatmap aligned with `image_png`: RGBA PNG in base64, "
                                         "blue (little evidence) to red, more opaque where the evidence is.")
    overlay_png: str = Field(description="`heatmap_png` laid over `image_png`, RGB PNG in base64.")


class VolumeRecord(BaseModel):
    label: str | None = Field(description="The tumour class with the most confident slices; `no_tumor` when no slice is "
                                          "such evidence; `not_brain_mri` when every slice was rejected.")
    class_counts: dict[str, int] = Field(description="Slices per predicted label.")
    evidence_slices: list[int] = Field(description="The slices that drove `label`, most probable first.")
    predicted: int = Field(description="Slices predicted.")
    skipped: int | None = Field(None, description="Slices left out for too little brain.")
    axis: int | None = Field(None, description="The array axis the slices were taken along.")
    confidence: float = Field(description="The probability a tumour slice needed to count as evidence.")
    notice: str
    text: str = Field(description="The summary in one line.")


class PredictResponse(BaseModel):
    filename: str = Field(description="The uploaded file's name, as sent (never used to tell its type).")
    media_type: str = Field(description="The type read from the content: image/jpeg, image/png, image/bmp, "
                                        "image/tiff or application/dicom.")
    predictions: list[PredictionRecord] = Field(description="One per image: one, one per frame of a DICOM file, or one "
                                                            "per slice of a NIfTI volume (slices with too little brain skipped).")
    volume: VolumeRecord | None = Field(None, description="Of a NIfTI volume: what its slices say together "
                                                          "(slice-level evidence, not a diagnosis); null otherwise.")
    model_sha256: str = Field(description="SHA-256 of the model file (of an ensemble: of its files' hashes in order).")
    elapsed_ms: float = Field(description="Time spent in the server on this request, milliseconds.")
    notice: str


class ExplainResponse(PredictResponse):
    predictions: list[ExplainedRecord]


class ModelFile(BaseModel):
    file: str
    sha256: str
    size_bytes: int


class Figure(BaseModel):
    what: str
    value: float
    detail: str | None = None


class ModelResponse(BaseModel):
    name: str = Field(description="The model's file name; an ensemble's names joined by ' + '.")
    version: str = Field(description="braintumor version and the first 12 hex digits of `sha256`.")
    sha256: str
    files: list[ModelFile]
    braintumor_version: str
    backbone: str
    classes: list[str]
    input_size: int = Field(description="Side of the square image the network sees, in pixels.")
    test_time_augmentation: bool
    ood_threshold: float | None = Field(None, description="Out-of-distribution scores above it are rejected; null: no detector.")
    runtime: str
    explain_available: bool = Field(description="Whether /v1/explain can compute heatmaps (it needs .safetensors checkpoints).")
    max_upload_bytes: int
    figures: list[Figure] = Field(description="Headline figures: the model card's for the shipped model, else the "
                                              "validation figures stored in the checkpoint.")
    figures_source: str
    notice: str


class Health(BaseModel):
    status: str = Field(description="`ok` while the server answers.")
    pending: int = Field(description="Inference jobs running or waiting now.")
    capacity: int = Field(description="Jobs that may run or wait at once; beyond it the answer is 503.")
