//! Reading a stock Tahoe-LAFS storage node's directory to build the announcement it would make.
