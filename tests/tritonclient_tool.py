"""What the tests ask of the real tritonclient, run in its own environment (tests/tritonclient_env.py).

    python tritonclient_tool.py infer HOST:PORT MODEL INPUTS.npz OUTPUTS.npz [TOKEN]
    python tritonclient_tool.py errors HOST:PORT MODEL INPUTS.npz [TOKEN]
    python tritonclient_tool.py pbtxt CONFIG.pbtxt...
    python tritonclient_tool.py schema DESCRIPTORS.pb

Each prints one JSON object. This file imports only tritonclient, protobuf and numpy (not latcomp).
"""

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2, json_format, text_format
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException


def _inputs(arrays) -> list:
    inputs = []
    for name, datatype in (("image", "UINT8"), ("mask", "UINT8"), ("realism", "FP32")):
        if name in arrays:
            tensor = triton.InferInput(name, list(arrays[name].shape), datatype)
            tensor.set_data_from_numpy(arrays[name])  # sent as raw_input_contents
            inputs.append(tensor)
    return inputs


def infer(target, model, inputs_path, outputs_path, token=None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else None
    arrays = dict(np.load(inputs_path))
    with triton.InferenceServerClient(target) as client:
        answer = {
            "live": client.is_server_live(headers=headers),
            "ready": client.is_server_ready(headers=headers),
            "model_ready": client.is_model_ready(model, headers=headers),
            "unknown_model_ready": client.is_model_ready("no-such-model", headers=headers),
            "server": client.get_server_metadata(headers=headers, as_json=True),
            "metadata": client.get_model_metadata(model, headers=headers, as_json=True),
            "config": client.get_model_config(model, headers=headers, as_json=True)["config"],
        }
        outputs = [triton.InferRequestedOutput("result"), triton.InferRequestedOutput("latent")]
        result = client.infer(model, _inputs(arrays), outputs=outputs, request_id="42", headers=headers)
        response = result.get_response()
        answer["id"] = response.id
        answer["model_version"] = response.model_version
        answer["outputs"] = [{"name": o.name, "datatype": o.datatype, "shape": [int(d) for d in o.shape]}
                             for o in response.outputs]
        np.savez(outputs_path, result=result.as_numpy("result"), latent=result.as_numpy("latent"))
    return answer


def errors(target, model, inputs_path, token=None) -> dict:
    """The status each bad request gets, {case: "StatusCode.X: message"}, and then a good one's."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    arrays = dict(np.load(inputs_path))
    cases = {
        "float_image": {**arrays, "image": arrays["image"].astype(np.float32)},
        "wrong_size": {**arrays, "image": arrays["image"][:, :-1]},
        "no_mask": {"image": arrays["image"]},
        "realism_out_of_range": {**arrays, "realism": np.full_like(arrays["realism"], 2.0)},
    }
    answer = {}
    with triton.InferenceServerClient(target) as client:
        for case, case_arrays in cases.items():
            tensors = []
            for name, array in case_arrays.items():
                datatype = "FP32" if array.dtype == np.float32 else "UINT8"
                tensor = triton.InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            answer[case] = _status(lambda tensors=tensors: client.infer(model, tensors, headers=headers))
        answer["unknown_model"] = _status(
            lambda: client.infer("no-such-model", _inputs(arrays), headers=headers))
        nope = [triton.InferRequestedOutput("nope")]
        answer["unknown_output"] = _status(lambda: client.infer(model, _inputs(arrays), outputs=nope,
                                                                headers=headers))
        answer["metadata_of_unknown_model"] = _status(
            lambda: client.get_model_metadata("no-such-model", headers=headers))
        answer["without_token"] = _status(lambda: client.infer(model, _inputs(arrays)))
        answer["good_after_the_bad"] = _status(lambda: client.infer(model, _inputs(arrays), headers=headers))
    return answer


def _status(call) -> str:
    try:
        call()
    except InferenceServerException as error:
        return f"{error.status()}: {error.message()}"
    return "OK"


def pbtxt(*paths) -> dict:
    """Each config.pbtxt parsed as Triton's ModelConfig (text_format refuses unknown fields, bad values)."""
    configs = {}
    for path in paths:
        with open(path) as handle:
            config = text_format.Parse(handle.read(), model_config_pb2.ModelConfig())
        configs[path] = json_format.MessageToDict(config, preserving_proto_field_name=True)
    return configs


def schema(descriptors_path) -> dict:
    """Every message, field, enum value and method of ours compared with tritonclient's."""
    ours = descriptor_pb2.FileDescriptorSet.FromString(open(descriptors_path, "rb").read())
    pool = service_pb2.DESCRIPTOR.pool
    mismatches, checked = [], 0

    def type_name(field) -> str:
        kind = field.message_type or field.enum_type
        return kind.full_name if kind is not None else ""

    def walk(prefix, messages, enums):
        nonlocal checked
        for enum in enums:
            theirs = pool.FindEnumTypeByName(prefix + enum.name)
            for value in enum.value:
                checked += 1
                if getattr(theirs.values_by_name.get(value.name), "number", None) != value.number:
                    mismatches.append(f"enum {prefix}{enum.name}.{value.name} = {value.number}")
        for message in messages:
            full = prefix + message.name
            try:
                theirs = pool.FindMessageTypeByName(full)
            except KeyError:
                mismatches.append(f"message {full} is not in tritonclient's schema")
                continue
            for field in message.field:
                checked += 1
                twin = theirs.fields_by_name.get(field.name)
                repeated = field.label == field.LABEL_REPEATED
                mine = (field.number, field.type, repeated, field.type_name.lstrip("."))
                if twin is None or mine != (twin.number, twin.type, twin.is_repeated, type_name(twin)):
                    mismatches.append(f"field {full}.{field.name} {mine}")
            walk(full + ".", message.nested_type, message.enum_type)

    for file in ours.file:
        walk(file.package + ".", file.message_type, file.enum_type)
        for service in file.service:
            theirs = pool.FindServiceByName(f"{file.package}.{service.name}")
            for method in service.method:
                checked += 1
                twin = theirs.methods_by_name.get(method.name)
                types = (method.input_type.lstrip("."), method.output_type.lstrip("."))
                if twin is None or types != (twin.input_type.full_name, twin.output_type.full_name):
                    mismatches.append(f"method {service.name}.{method.name}")
    return {"checked": checked, "mismatches": mismatches}


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    commands = {"infer": infer, "errors": errors, "pbtxt": pbtxt, "schema": schema}
    print(json.dumps(commands[command](*arguments)))
