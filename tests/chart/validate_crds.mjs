// Validate custom resources against their CRD schemas with the kubernetes-models packages that
// scripts/install-crd-models.sh puts in .tools/npm. Reads a JSON list of objects on stdin and
// prints one JSON result per object: {name, status: "valid" | "invalid" | "unknown", error}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = process.env.CRD_MODELS_DIR;
const load = (path) => import(pathToFileURL(join(root, "@kubernetes-models", path)).href);
const models = {
  "monitoring.coreos.com/v1": await load("prometheus-operator/monitoring.coreos.com/v1/index.js"),
  "keda.sh/v1alpha1": await load("keda/keda.sh/v1alpha1/index.js"),
  "gateway.networking.k8s.io/v1": await load("gateway-api/gateway.networking.k8s.io/v1/index.js"),
};

const results = JSON.parse(readFileSync(0, "utf8")).map((obj) => {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const Model = models[obj.apiVersion]?.[obj.kind];
  if (!Model) return { name, status: "unknown" };
  try {
    new Model(obj).validate();
    return { name, status: "valid" };
  } catch (err) {
    return { name, status: "invalid", error: String(err.message ?? err) };
  }
});
console.log(JSON.stringify(results));
