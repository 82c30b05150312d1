"""The cohort file schema: one row per individual and CGM reading (documented in README)."""

from __future__ import annotations

REQUIRED_COLUMNS = ("patient_id", "time", "cgm")
OPTIONAL_COLUMNS = ("group", "bg", "cho", "insulin")
TRAIT_COLUMNS = (
    "age_years",
    "body_weight_kg",
    "carb_ratio_g_per_u",
    "correction_factor_mgdl_per_u",
    "total_daily_insulin_u",
    "basal_glucose_mgdl",
    "basal_insulin_pmol_l",
    "insulin_sensitivity_vmx",
    "liver_insulin_action_kp3",
    "endogenous_glucose_production",
    "carb_absorption_kabs",
)
COLUMN_DOCS = {
    "patient_id": "identifier of the individual (string)",
    "time": "timestamp (ISO 8601, offsets allowed, or epoch seconds), increasing per individual",
    "cgm": "CGM glucose in mg/dL; empty (NaN) where the sensor gave no reading",
    "group": "age group: child, adolescent or adult (used for fairness across groups)",
    "bg": "true blood glucose in mg/dL (simulated cohorts only)",
    "cho": "carbohydrates eaten in the interval ending at `time`, grams",
    "insulin": "insulin delivered in the interval ending at `time`, units",
}
# Physiologically impossible CGM values (mg/dL): outside this range a file is rejected.
PLAUSIBLE_CGM_MGDL = (10.0, 700.0)
# No CGM reports a number below this (Dexcom's "Low" is stored as 39, Libre's floor is 40):
# a lower value in an export or a shipped dataset is an artefact (a cut-off line, a sensor
# fault), imported as a missing reading and counted, never as a severe low.
ARTEFACT_BELOW_MGDL = 39.0
# what CGM sensors report (a Dexcom G6, a Libre): Low below, High above
SENSOR_LOW_MGDL, SENSOR_HIGH_MGDL = 40.0, 400.0
# Most insulin (U) and carbohydrate (g) one interval can hold: far above any pump's bolus
# limit (25 U on a t:slim X2) or any meal, far below what a wrong unit or column gives. A
# cohort file beyond it is refused; in a shipped dataset such an entry is dropped, counted.
PLAUSIBLE_AMOUNTS = {"insulin": (100.0, "U"), "cho": (1000.0, "g")}
