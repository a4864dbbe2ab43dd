from fedrec_app.cli import main

raise SystemExit(main())
