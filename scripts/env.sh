# Sourced by the project's scripts: lets Open MPI run as root and oversubscribe cores,
# as needed on the small machines the quick start and the tests run on.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# OpenMP threads that wait passively: on shared or oversubscribed cores, spinning threads
# of one rank steal the cores another rank computes on (halves the CPU backend's rate).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
