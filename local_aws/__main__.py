"""`python -m local_aws --workspace W`: the workspace's twin in the foreground (the background one runs the same)."""

from local_aws.server import main

main()
