from claver.cli import main

raise SystemExit(main())
