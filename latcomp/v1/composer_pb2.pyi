from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_JPEG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_RAW: _ClassVar[ImageFormat]

class OutputSize(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_SIZE_UNSPECIFIED: _ClassVar[OutputSize]
    OUTPUT_SIZE_MODEL: _ClassVar[OutputSize]
    OUTPUT_SIZE_CANVAS: _ClassVar[OutputSize]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_JPEG: ImageFormat
IMAGE_FORMAT_RAW: ImageFormat
OUTPUT_SIZE_UNSPECIFIED: OutputSize
OUTPUT_SIZE_MODEL: OutputSize
OUTPUT_SIZE_CANVAS: OutputSize

class RawPixels(_message.Message):
    __slots__ = ("width", "height", "data")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    data: bytes
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawPixels
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawPixels, _Mapping]] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawPixels
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawPixels, _Mapping]] = ...) -> None: ...

class Latent(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("format", "jpeg_quality", "return_latent", "return_input", "preserve_known", "realism", "size", "feather_px")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    RETURN_LATENT_FIELD_NUMBER: _ClassVar[int]
    RETURN_INPUT_FIELD_NUMBER: _ClassVar[int]
    PRESERVE_KNOWN_FIELD_NUMBER: _ClassVar[int]
    REALISM_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    FEATHER_PX_FIELD_NUMBER: _ClassVar[int]
    format: ImageFormat
    jpeg_quality: int
    return_latent: bool
    return_input: bool
    preserve_known: bool
    realism: float
    size: OutputSize
    feather_px: int
    def __init__(self, format: _Optional[_Union[ImageFormat, str]] = ..., jpeg_quality: _Optional[int] = ..., return_latent: bool = ..., return_input: bool = ..., preserve_known: bool = ..., realism: _Optional[float] = ..., size: _Optional[_Union[OutputSize, str]] = ..., feather_px: _Optional[int] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("image", "mask", "offset_x", "offset_y")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_X_FIELD_NUMBER: _ClassVar[int]
    OFFSET_Y_FIELD_NUMBER: _ClassVar[int]
    image: Image
    mask: Mask
    offset_x: int
    offset_y: int
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ..., offset_x: _Optional[int] = ..., offset_y: _Optional[int] = ...) -> None: ...

class CompositeRequest(_message.Message):
    __slots__ = ("model", "layers", "output")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model: str
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    output: OutputOptions
    def __init__(self, model: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ...) -> None: ...

class InpaintRequest(_message.Message):
    __slots__ = ("model", "image", "mask", "output")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model: str
    image: Image
    mask: Mask
    output: OutputOptions
    def __init__(self, model: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ...) -> None: ...

class SampleRequest(_message.Message):
    __slots__ = ("model", "seed", "truncation", "output")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model: str
    seed: int
    truncation: float
    output: OutputOptions
    def __init__(self, model: _Optional[str] = ..., seed: _Optional[int] = ..., truncation: _Optional[float] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ...) -> None: ...

class EditStreamRequest(_message.Message):
    __slots__ = ("request_id", "composite", "inpaint", "sample")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    COMPOSITE_FIELD_NUMBER: _ClassVar[int]
    INPAINT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    composite: CompositeRequest
    inpaint: InpaintRequest
    sample: SampleRequest
    def __init__(self, request_id: _Optional[int] = ..., composite: _Optional[_Union[CompositeRequest, _Mapping]] = ..., inpaint: _Optional[_Union[InpaintRequest, _Mapping]] = ..., sample: _Optional[_Union[SampleRequest, _Mapping]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "compute_ms", "total_ms", "batch_size")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    compute_ms: float
    total_ms: float
    batch_size: int
    def __init__(self, queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class EditResponse(_message.Message):
    __slots__ = ("image", "latent", "input", "timing", "request_id", "input_mask")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_MASK_FIELD_NUMBER: _ClassVar[int]
    image: Image
    latent: Latent
    input: Image
    timing: Timing
    request_id: int
    input_mask: Mask
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., latent: _Optional[_Union[Latent, _Mapping]] = ..., input: _Optional[_Union[Image, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., request_id: _Optional[int] = ..., input_mask: _Optional[_Union[Mask, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "resolution", "latent_shape", "z_dim", "backend", "device", "precision", "max_batch", "max_pixels", "max_message_bytes", "instances")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    LATENT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    Z_DIM_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    resolution: int
    latent_shape: _containers.RepeatedScalarFieldContainer[int]
    z_dim: int
    backend: str
    device: str
    precision: str
    max_batch: int
    max_pixels: int
    max_message_bytes: int
    instances: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., resolution: _Optional[int] = ..., latent_shape: _Optional[_Iterable[int]] = ..., z_dim: _Optional[int] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., max_batch: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., instances: _Optional[int] = ...) -> None: ...
