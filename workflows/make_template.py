"""Write workflows/mnist-template.yaml, the WorkflowTemplate twin of workflows/mnist.yaml: ``python workflows/make_template.py``.

The Workflow is the one source; the template differs only in its kind, a fixed name and its header, so the
two never drift (tests/k8s fails while the file on disk differs from what this writes).
"""

from __future__ import annotations

import sys
from pathlib import Path

WORKFLOWS_DIR = Path(__file__).resolve().parent
WORKFLOW_PATH = WORKFLOWS_DIR / "mnist.yaml"
TEMPLATE_PATH = WORKFLOWS_DIR / "mnist-template.yaml"
TEMPLATE_NAME = "mnist-federated"
HEADER = f"""\
# GENERATED from workflows/mnist.yaml by `python workflows/make_template.py`: edit that file, then rerun this.
# The federated MNIST pipeline as a WorkflowTemplate, installed by `kubectl apply -k workflows/`:
#   argo submit -n mnist --from workflowtemplate/{TEMPLATE_NAME} -p workers=3 -p image=REGISTRY/mnist-federated:gpu
# Parameters, steps and limits are those of mnist.yaml; see the comments there.
"""


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with the one occurrence of ``old`` replaced; a source that no longer matches is an error."""
    if text.count(old) != 1:
        raise ValueError(f"{WORKFLOW_PATH.name}: expected exactly one {old!r}")
    return text.replace(old, new)


def template_text(workflow_text: str) -> str:
    """The WorkflowTemplate YAML for a Workflow YAML: same spec, kind WorkflowTemplate, a fixed name."""
    body = workflow_text[workflow_text.index("apiVersion:"):]
    body = replace_once(body, "\nkind: Workflow\n", "\nkind: WorkflowTemplate\n")
    body = replace_once(body, "\n  generateName: mnist-federated-\n", f"\n  name: {TEMPLATE_NAME}\n")
    return HEADER + body


def main() -> int:
    TEMPLATE_PATH.write_text(template_text(WORKFLOW_PATH.read_text()))
    print(f"wrote {TEMPLATE_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
