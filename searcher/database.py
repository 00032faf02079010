"""sqlite-utils, imported here for the modules that store through it (`store`, `querylog`), without pandas.

sqlite-utils imports pandas when it is installed, only to store pandas timestamps as text; searcher stores
none, and pandas took 0.18 s of a 2 s `searcher index` run. An application that has imported pandas keeps
it; one that imports it later gets it as usual.
"""

import sys

_pandas_absent = "pandas" not in sys.modules
if _pandas_absent:
    sys.modules["pandas"] = None  # type: ignore[assignment]  # `import pandas` raises ImportError meanwhile
try:
    import sqlite_utils
finally:
    if _pandas_absent:
        del sys.modules["pandas"]

__all__ = ["sqlite_utils"]
