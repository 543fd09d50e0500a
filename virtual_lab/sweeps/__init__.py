"""Sweeps that survive crashes: fixed populations, staged commits, a manifest, local processes or Dask.

Orchestration above the stages it drives (lab, sessions): nothing below imports it.

Modules
-------
:mod:`~virtual_lab.sweeps.expand`
    A protocol's sweep as run specs, grouped into cohorts; warnings about runs too short for their rule.
:mod:`~virtual_lab.sweeps.priors`
    Runs drawn from priors over the unknowns (``[sweep] sampling = "random"``, ``[sweep.priors]``).
:mod:`~virtual_lab.sweeps.calibrate`
    Learning-curve-matched rates (``[sweep.match_curves]``): pilot networks, curve distances, ``calibration.json``.
:mod:`~virtual_lab.sweeps.plan`
    Fixed populations and the :class:`~virtual_lab.sweeps.plan.SweepPlan` (no training, no file access).
:mod:`~virtual_lab.sweeps.storage`
    What is on disk: run-file checks, free space, staging and commit, the manifest file and the event log.
:mod:`~virtual_lab.sweeps.lock`
    One writer per recordings folder: the exclusive lock a sweep holds throughout, stale locks taken over.
:mod:`~virtual_lab.sweeps.executors`
    Training one population in a worker, and the in-process, local-pool and Dask executors.
:mod:`~virtual_lab.sweeps.run`
    :func:`~virtual_lab.sweeps.run.run_sweep` and its :class:`~virtual_lab.sweeps.run.SweepResult`.
:mod:`~virtual_lab.sweeps.status`
    :func:`~virtual_lab.sweeps.status.sweep_status`: a recordings folder summarized.

How a sweep runs
----------------
1. **Plan.** The protocol's sweep is expanded into run specs (:func:`virtual_lab.sweeps.expand.expand_sweep`)
   and every cohort (runs that can share a batched population) is cut, in sweep order, into the fewest
   near-equal *populations* of at most ``training.population_size`` networks
   (:func:`virtual_lab.sweeps.plan.plan_populations`). Population membership depends on the sweep alone,
   never on which runs are missing, so a resumed or distributed sweep trains every network in the same
   population, with the same number of threads (one), as an uninterrupted local sweep, and writes
   byte-identical sessions. (The batched engine equals one-at-a-time training only within float tolerance
   when the population differs.)
2. **Scan.** Every expected session file is checked with h5py
   (:func:`virtual_lab.sweeps.storage.check_run_file`): complete and of the expected spec (run id and every
   resolved field stored in the file) -> reused; missing, truncated, unreadable or incomplete -> retrained;
   complete but of another spec, or a foreign NWB file at that path -> moved aside to
   ``<name>.mismatched-N`` (reported) and retrained, never silently overwritten.
3. **Train and commit.** A population with any run to (re)write is trained as a whole; its sessions are
   written into a private staging folder ``<root>/.staging/<population>-<token>/``; when all are written
   and fsynced a ``COMMIT`` list is written atomically and the files are renamed into place. At the next
   start, staging folders with a ``COMMIT`` are rolled forward and others deleted. Hence the sessions of a
   population appear together or not at all: a sweep killed at any moment (SIGKILL included) resumes
   without ever training a completed run again, and never leaves a file under a final name that fails
   to read. (A population that is only partly on disk for another reason - a run that failed to write, a
   deleted file - is retrained as a whole and only its missing sessions are written, to stay
   bit-identical; the log says so.)
4. **Record.** ``<root>/sweep_manifest.json`` (rewritten atomically) holds every run of the plan with its
   status (``complete``, ``diverged``, ``failed``, ``pending``), error, step, rule, architecture, path and
   the SHA-256 and size of its session taken at commit (``virtual-lab status --verify`` rehashes them);
   ``<root>/sweep_log.jsonl`` is an append-only, fsynced event log (sweep and population starts, every
   run outcome). A failing population is recorded and the sweep goes on.

All four steps run under the folder's exclusive lock (:mod:`virtual_lab.sweeps.lock`, held by the calling
process whatever the executor): a second sweep on the folder is refused at once, naming the holder, and
never recovers (deletes) a live sweep's staging.

Executors: ``"local"`` (``n_workers`` worker processes, one torch thread each; ``0`` trains in the calling
process) and ``"dask"`` (:mod:`dask.distributed`; a scheduler address, or a ``LocalCluster`` bound to
127.0.0.1). Dask workers write the sessions themselves, so the recordings folder must be on a filesystem
every worker sees (the usual shared home or scratch of a cluster).

Running on SLURM (dask-jobqueue)
--------------------------------
Install ``virtual_lab[dask]`` and ``dask-jobqueue`` in an environment every node sees, start a cluster
whose workers run one thread each, and point the sweep at its scheduler::

    # cluster.py - keep it running (e.g. in tmux on the login node)
    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=8, processes=8, memory="32GB", walltime="04:00:00",
                           job_extra_directives=["--partition=cpu"])
    cluster.adapt(minimum_jobs=1, maximum_jobs=20)
    print(cluster.scheduler_address)   # e.g. tcp://10.1.2.3:8786
    input("press enter to stop")

    virtual-lab run study.toml --output-dir /shared/scratch/recordings \\
        --executor dask --scheduler tcp://10.1.2.3:8786

``processes=cores`` gives one single-threaded worker process per core (training sets one torch thread
anyway). A node that dies or a job that hits its wall time loses only its populations in flight: Dask
reschedules them, and a sweep killed as a whole resumes with the same command. ``virtual-lab status
/shared/scratch/recordings/study`` tells how far it got.
"""
