"""The errors a user sees: each is one line on stderr and exit status 2, never a traceback.

Bad arguments, a profile file with a typo, a results file of another version, a kernel that
cannot be found or built, a VM lane that cannot run: every module raises one of these, and
the command line catches NfsconfError alone.
"""


class NfsconfError(Exception):
    """Bad input or an environment that cannot do what was asked; the message says why."""


class UsageError(NfsconfError):
    """Bad command-line arguments or a run that cannot start as asked."""


class ProfileError(NfsconfError, ValueError):
    """A profile that does not exist or does not parse."""


class ResultsError(NfsconfError, ValueError):
    """A results file this version cannot read, or runs that cannot be compared."""


class KernelError(NfsconfError):
    """The kernel spec cannot be turned into a bootable kernel."""


class AptError(NfsconfError):
    """apt could not answer: no mirror, no such suite or package, a failed download."""


class BuildError(NfsconfError):
    """A kernel could not be built as asked: which step, and why."""


class LaneError(NfsconfError):
    """The VM lane could not run the suite: no boot, no nfsd, a timeout."""
