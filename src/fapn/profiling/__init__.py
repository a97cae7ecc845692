"""Model complexity: parameters and MACs in the paper's convention and in full."""

from fapn.profiling.complexity import (
    Complexity,
    Convention,
    count_macs,
    count_parameters,
    deform_conv_macs,
    profile_model,
)
from fapn.profiling.table1 import TABLE1, Table1Row, table1_rows

__all__ = [
    "Complexity",
    "Convention",
    "count_macs",
    "count_parameters",
    "deform_conv_macs",
    "profile_model",
    "TABLE1",
    "Table1Row",
    "table1_rows",
]
