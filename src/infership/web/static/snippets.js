// Copyable client code for the selected model: curl, Python requests and tritonclient.

function example(input) {
  // A small valid example tensor: unknown dimensions become 1.
  const shape = input.shape.map((d) => (d < 0 ? 1 : d));
  const count = shape.reduce((a, b) => a * b, 1);
  const fill = input.datatype === "BYTES" ? "text" : input.datatype === "BOOL" ? true : 0;
  return { name: input.name, shape, datatype: input.datatype, data: Array(Math.min(count, 4096)).fill(fill) };
}

function jsonBody(metadata) {
  return JSON.stringify({ inputs: metadata.inputs.map(example) });
}

const NUMPY = {
  BOOL: "bool", UINT8: "uint8", UINT16: "uint16", UINT32: "uint32", UINT64: "uint64",
  INT8: "int8", INT16: "int16", INT32: "int32", INT64: "int64",
  FP16: "float16", FP32: "float32", FP64: "float64", BYTES: "object",
};

function curl({ origin, path, metadata, classifier }) {
  if (classifier) {
    return `curl -F img=@cat.jpg '${origin}${path}/predict?top_k=5'`;
  }
  return [
    `curl -H 'Content-Type: application/json' \\`,
    `  -d '${jsonBody(metadata)}' \\`,
    `  ${origin}${path}/infer`,
  ].join("\n");
}

function requests({ origin, path, metadata, classifier }) {
  if (classifier) {
    return [
      "import requests",
      "",
      'with open("cat.jpg", "rb") as image:',
      "    response = requests.post(",
      `        "${origin}${path}/predict",`,
      '        files={"img": image},',
      '        params={"top_k": 5},',
      "    )",
      "response.raise_for_status()",
      'for guess in response.json()["predictions"][0]["top_k"]:',
      '    print(f"{guess[\'probability\']:.3f}  {guess[\'label\']}")',
    ].join("\n");
  }
  return [
    "import requests",
    "",
    `body = ${jsonBody(metadata)}`,
    `response = requests.post("${origin}${path}/infer", json=body)`,
    "response.raise_for_status()",
    'for output in response.json()["outputs"]:',
    '    print(output["name"], output["shape"], output["data"][:5])',
  ].join("\n");
}

function tritonclient({ origin, model, version, metadata, classifier }) {
  const host = origin.replace(/^https?:\/\//, "");
  const versionArg = version ? `, model_version="${version}"` : "";
  const head = [
    "import numpy as np",
    "import tritonclient.http as httpclient",
    "",
    `client = httpclient.InferenceServerClient("${host}")`,
  ];
  if (classifier) {
    const input = metadata.inputs.find((i) => i.datatype === "BYTES");
    return [
      ...head,
      `image = httpclient.InferInput("${input.name}", [1], "BYTES")`,
      'image.set_data_from_numpy(np.array([open("cat.jpg", "rb").read()], dtype=object))',
      `result = client.infer("${model}", [image]${versionArg})`,
      'print(result.as_numpy("label")[0], result.as_numpy("probability")[0])',
    ].join("\n");
  }
  const lines = [...head];
  const names = [];
  metadata.inputs.forEach((input, i) => {
    const { shape } = example(input);
    const dtype = NUMPY[input.datatype] ?? "float32";
    const value = input.datatype === "BYTES" ? `np.array([b"text"] * ${shape.reduce((a, b) => a * b, 1)}, dtype=object).reshape(${JSON.stringify(shape)})` : `np.zeros(${JSON.stringify(shape)}, dtype=np.${dtype})`;
    lines.push(`x${i} = httpclient.InferInput("${input.name}", ${JSON.stringify(shape)}, "${input.datatype}")`);
    lines.push(`x${i}.set_data_from_numpy(${value})`);
    names.push(`x${i}`);
  });
  lines.push(`result = client.infer("${model}", [${names.join(", ")}]${versionArg})`);
  for (const output of metadata.outputs) lines.push(`print(result.as_numpy("${output.name}"))`);
  return lines.join("\n");
}

const WRITERS = { curl, requests, tritonclient };

/** The snippet in `lang` for `model` (and `version`, "" for the newest) on this server. */
export function snippet(lang, { origin, model, version, metadata, classifier }) {
  const path = `/v2/models/${encodeURIComponent(model)}${version ? `/versions/${encodeURIComponent(version)}` : ""}`;
  return WRITERS[lang]({ origin, model, version, path, metadata, classifier });
}
