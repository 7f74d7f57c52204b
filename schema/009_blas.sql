-- 009: the OpenBLAS kernel set a run computed with (src/core/blaskernel.h), for the record, e.g.
-- "SkylakeX (tokenrec's choice; OpenBLAS default Prescott)". Not part of the fingerprint:
-- a run is the same run on any kernels. A run resumed on other kernels lists both
-- ("Haswell (OPENBLAS_CORETYPE); then SkylakeX (...)"). NULL for runs made before this.
ALTER TABLE stage_runs ADD COLUMN blas TEXT;
