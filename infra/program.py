"""The Pulumi program: read the stack's spec, build that cloud's serving stack, export its outputs.

The same function runs under the Pulumi CLI (`infra/__main__.py`) and in process under the Automation API
(`mct infra`). Each cloud's component is imported only for its own stacks: a provider SDK takes seconds
to import.
"""

from __future__ import annotations

import importlib

import pulumi
from pydantic.alias_generators import to_camel

from infra.component import OUTPUT_FIELDS, ServingStack
from infra.spec import StackSpec, spec_from_pulumi_config

__all__ = ["COMPONENTS", "build_stack", "serving_program"]

# cloud -> (module, class) of its ComponentResource
COMPONENTS = {
    "aws": ("infra.aws", "AwsServingStack"),
    "gcp": ("infra.gcp", "GcpServingStack"),
    "azure": ("infra.azure", "AzureServingStack"),
}


def build_stack(spec: StackSpec) -> ServingStack:
    """The serving stack of `spec.cloud`, named after the spec."""
    module_name, class_name = COMPONENTS[spec.cloud]
    component: type[ServingStack] = getattr(importlib.import_module(module_name), class_name)
    return component(spec.name, spec)


def serving_program() -> None:
    """The program of every stack of the `mct-serving` project."""
    spec = spec_from_pulumi_config()
    stack = build_stack(spec)
    pulumi.export("cloud", spec.cloud)
    for output in OUTPUT_FIELDS:  # as stack outputs, in Pulumi's camelCase: serviceUrl, bucketUrl, ...
        pulumi.export(to_camel(output), getattr(stack, output))
