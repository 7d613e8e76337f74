"""ferry."""

import ferry.plugins  # noqa: F401  (imports msgspec the lean way, see there)
