"""Device profiles (data files) and the latency, energy and memory models built on them.

load_profile("rpi4")                     # packaged, user-built (COMPACTNAS_PROFILE_DIR) or registered
model = create_latency_model("stm32f746")
model.predict_ms("stem_k3_s1_c16-ds_r1_k3_s1_e1_c16-head_c0", (1, 8, 8))
model.fits(spec, (1, 8, 8))              # None, or "peak SRAM 410 KB > 320 KB"
"""

from compactnas.hw_profiles.calibrate import calibrate
from compactnas.hw_profiles.models import (
    LatencyModel,
    RooflineModel,
    TableModel,
    create_latency_model,
)
from compactnas.hw_profiles.profile import DeviceProfile, EnergyCost, Measurement, MemoryLimits
from compactnas.hw_profiles.profile_io import profile_from_dict, read_profile, write_profile
from compactnas.hw_profiles.registry import (
    list_devices,
    load_profile,
    register_device,
    unregister_device,
    user_profile_dir,
)
from compactnas.hw_profiles.tables import build_table_profile
from compactnas.hw_profiles.validate import predict, validate, validate_measurements

__all__ = [
    "DeviceProfile",
    "EnergyCost",
    "LatencyModel",
    "Measurement",
    "MemoryLimits",
    "RooflineModel",
    "TableModel",
    "build_table_profile",
    "calibrate",
    "create_latency_model",
    "list_devices",
    "load_profile",
    "profile_from_dict",
    "read_profile",
    "register_device",
    "unregister_device",
    "user_profile_dir",
    "predict",
    "validate",
    "validate_measurements",
    "write_profile",
]
