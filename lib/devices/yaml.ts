// The YAML parser alone, bundled as dist/ch-run-yaml.cjs, which cdi.ts
// (parseYaml) loads through the Host only when it reads a YAML CDI spec.
// Inlined in ch-run's devices bundle, its 262 KB were read at every first
// --gpu, --ib or --device launch, which most never need it for.

export { parse } from 'yaml';
