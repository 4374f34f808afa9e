from snnet.cli import main

raise SystemExit(main())
