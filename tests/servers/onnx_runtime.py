"""Minimal MLServer runtime serving an ONNX file with onnxruntime (CPU, 1 thread).

Used by qgate's remote-backend tests as a real Open Inference Protocol V2 (KServe V2) server.

model-settings.json:
    "implementation": "onnx_runtime.OnnxModel",
    "parameters": {
        "uri": "<path to .onnx, relative to this model-settings.json or absolute>",
        "extra": {
            "delay_s": 0,          # sleep this long (without blocking the server) in predict
            "fail": false,         # true: raise a plain exception in predict -> HTTP 500,
                                   #   text/plain "Internal Server Error" (unhandled error)
                                   # "json": raise MLServerError(500) -> HTTP 500,
                                   #   application/json {"error": "..."}
            "graph_optimization": "default" | "disable_all"
        }
    }

Request handling:
  * inputs are matched to the session's inputs BY NAME; every session input must be given;
    datatype must equal the session's (FP32 for tensor(float), INT64 for tensor(int64), ...);
    rank and fixed dimensions must match (symbolic dimensions accept any size).
    Violations -> HTTP 400 {"error": "..."}.
  * outputs: all session outputs in session order, or only those named in the request's
    "outputs" (in request order); an unknown name -> HTTP 400.
  * each output keeps the exact shape onnxruntime returned (no [N] -> [N, 1] padding).
"""

import asyncio
from typing import Dict, List

import numpy as np
import onnxruntime as ort

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import (
    Datatype,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    ResponseOutput,
)
from mlserver.utils import get_model_uri

# onnxruntime's type strings -> V2 datatypes
_ORT_TO_V2: Dict[str, Datatype] = {
    "tensor(float)": Datatype.FP32,
    "tensor(double)": Datatype.FP64,
    "tensor(float16)": Datatype.FP16,
    "tensor(int64)": Datatype.INT64,
    "tensor(int32)": Datatype.INT32,
    "tensor(int16)": Datatype.INT16,
    "tensor(int8)": Datatype.INT8,
    "tensor(uint64)": Datatype.UINT64,
    "tensor(uint32)": Datatype.UINT32,
    "tensor(uint16)": Datatype.UINT16,
    "tensor(uint8)": Datatype.UINT8,
    "tensor(bool)": Datatype.BOOL,
}


def _v2_datatype(ort_type: str) -> Datatype:
    try:
        return _ORT_TO_V2[ort_type]
    except KeyError:
        raise MLServerError(f"unsupported ONNX tensor type {ort_type}", status_code=500)


def _v2_shape(ort_shape) -> List[int]:
    # Symbolic or unknown dimensions are reported as -1 (V2 convention).
    return [d if isinstance(d, int) and d >= 0 else -1 for d in ort_shape]


class OnnxModel(MLModel):
    async def load(self) -> bool:
        params = self._settings.parameters
        extra = (params.extra if params and params.extra else {}) or {}
        self._delay_s = float(extra.get("delay_s", 0) or 0)
        self._fail = extra.get("fail", False)

        uri = await get_model_uri(self._settings)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if extra.get("graph_optimization", "default") == "disable_all":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._session = ort.InferenceSession(uri, so, providers=["CPUExecutionProvider"])

        self._in_meta = {
            i.name: MetadataTensor(
                name=i.name, datatype=_v2_datatype(i.type), shape=_v2_shape(i.shape)
            )
            for i in self._session.get_inputs()
        }
        self._out_names = [o.name for o in self._session.get_outputs()]

        # Advertise the real signature in GET /v2/models/{name} unless the settings give one.
        if not self.inputs:
            self.inputs = list(self._in_meta.values())
        if not self.outputs:
            self.outputs = [
                MetadataTensor(
                    name=o.name, datatype=_v2_datatype(o.type), shape=_v2_shape(o.shape)
                )
                for o in self._session.get_outputs()
            ]
        if not self._settings.platform:
            self._settings.platform = "onnxruntime_onnx"
        return True

    def _feed(self, payload: InferenceRequest) -> Dict[str, np.ndarray]:
        given = {}
        for req_input in payload.inputs:
            if req_input.name in given:
                raise MLServerError(f"input '{req_input.name}' given twice")
            given[req_input.name] = req_input

        unknown = sorted(set(given) - set(self._in_meta))
        if unknown:
            raise MLServerError(
                f"unknown input(s) {unknown}; model inputs are {list(self._in_meta)}"
            )

        feed = {}
        for name, meta in self._in_meta.items():
            if name not in given:
                raise MLServerError(f"missing input '{name}'")
            req_input = given[name]
            got, want = Datatype(req_input.datatype), Datatype(meta.datatype)
            if got != want:
                raise MLServerError(
                    f"input '{name}': datatype {got.value}, model expects {want.value}"
                )
            shape = list(req_input.shape)
            if len(shape) != len(meta.shape) or any(
                want >= 0 and got != want for got, want in zip(shape, meta.shape)
            ):
                raise MLServerError(
                    f"input '{name}': shape {shape}, model expects {meta.shape} (-1 = any)"
                )
            try:
                arr = NumpyCodec.decode_input(req_input)
            except ValueError as e:  # e.g. data length does not match the shape
                raise MLServerError(f"input '{name}': {e}")
            feed[name] = np.ascontiguousarray(arr)
        return feed

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        if self._fail == "json":
            raise MLServerError(
                f"model '{self.name}' is configured to fail (test fixture)", status_code=500
            )
        if self._fail:
            raise RuntimeError(f"model '{self.name}' is configured to fail (test fixture)")

        feed = self._feed(payload)

        if payload.outputs:
            names = [o.name for o in payload.outputs]
            unknown = [n for n in names if n not in self._out_names]
            if unknown:
                raise MLServerError(
                    f"unknown output(s) {unknown}; model outputs are {self._out_names}"
                )
        else:
            names = list(self._out_names)

        try:
            results = self._session.run(names, feed)
        except Exception as e:  # onnxruntime rejected the feed or failed to run
            raise MLServerError(f"onnxruntime: {e}", status_code=500)

        outputs: List[ResponseOutput] = []
        for name, arr in zip(names, results):
            out = NumpyCodec.encode_output(name, np.asarray(arr))
            out.shape = list(arr.shape)  # undo the codec's [N] -> [N, 1] padding
            outputs.append(out)

        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=outputs,
        )
