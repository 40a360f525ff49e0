"""`nfsconf bench`: what users wait for, each figure next to an anchor measured in the same
run. decode.py: cold handle decodes against mergerfs -o noforget; matrix.py: the local
matrix at --jobs 1 and N, and where its time goes; vm.py: a knfsd lane against the bare
boot of the same kernel."""
