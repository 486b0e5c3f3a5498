"""Reading traced programs: which matrix products a function issues, and at what precision.

CPUs compute float32 products in float32 whatever the precision says, so a CPU test of GPU
precision has to read the traced program: JAX's default there lets recent NVIDIA GPUs round
float32 factors to TensorFloat32."""
from __future__ import annotations


def dot_precisions(jaxpr) -> list:
    """The `precision` of every dot_general in a jaxpr, while-loop bodies and branches too."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    found += dot_precisions(inner)
    return found
