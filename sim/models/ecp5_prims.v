// Behavioural simulation models of the ECP5 primitives the ULX3S board top instantiates, for
// the board-top system test (yosys declares EHXPLLL without a behaviour and maps IB / OBZ to
// its TRELLIS_IO cell). Needs a simulator with timing (Verilator --timing, Icarus).
`timescale 1ns / 1ps

// Input buffer (Lattice library: O follows the pad).
module IB (input I, output O);
	assign O = I;
endmodule

// Output buffer with tristate (Lattice library: T high floats the pad).
module OBZ (input I, input T, output O);
	assign O = T ? 1'bz : I;
endmodule

// EHXPLLL, FEEDBK_PATH "CLKOP" and the CLKOP output only. It measures the reference period at
// CLKI and makes CLKOP at
//     f_CLKOP = f_CLKI * CLKFB_DIV / CLKI_DIV,   f_VCO = f_CLKOP * CLKOP_DIV
// (ECP5 sysCLOCK PLL usage guide, TN1263), with LOCK high after LOCK_CYCLES reference cycles.
// Settings outside the data sheet's ranges (PFD 3.125-400 MHz, VCO 400-800 MHz, CLKOP
// 3.125-400 MHz) stop the simulation: a wrong divider setting fails here, not on a board.
module EHXPLLL (
	input CLKI, input CLKFB, input PHASESEL1, input PHASESEL0, input PHASEDIR,
	input PHASESTEP, input PHASELOADREG, input STDBY, input PLLWAKESYNC, input RST,
	input ENCLKOP, input ENCLKOS, input ENCLKOS2, input ENCLKOS3,
	output CLKOP, output CLKOS, output CLKOS2, output CLKOS3, output LOCK, output INTLOCK,
	output REFCLK, output CLKINTFB
);
	parameter CLKI_DIV = 1;
	parameter CLKFB_DIV = 1;
	parameter CLKOP_DIV = 8;
	parameter CLKOS_DIV = 8;
	parameter CLKOS2_DIV = 8;
	parameter CLKOS3_DIV = 8;
	parameter CLKOP_ENABLE = "ENABLED";
	parameter CLKOS_ENABLE = "DISABLED";
	parameter CLKOS2_ENABLE = "DISABLED";
	parameter CLKOS3_ENABLE = "DISABLED";
	parameter CLKOP_CPHASE = 0;
	parameter CLKOS_CPHASE = 0;
	parameter CLKOS2_CPHASE = 0;
	parameter CLKOS3_CPHASE = 0;
	parameter CLKOP_FPHASE = 0;
	parameter CLKOS_FPHASE = 0;
	parameter CLKOS2_FPHASE = 0;
	parameter CLKOS3_FPHASE = 0;
	parameter FEEDBK_PATH = "CLKOP";
	parameter CLKOP_TRIM_POL = "RISING";
	parameter CLKOP_TRIM_DELAY = 0;
	parameter CLKOS_TRIM_POL = "RISING";
	parameter CLKOS_TRIM_DELAY = 0;
	parameter OUTDIVIDER_MUXA = "DIVA";
	parameter OUTDIVIDER_MUXB = "DIVB";
	parameter OUTDIVIDER_MUXC = "DIVC";
	parameter OUTDIVIDER_MUXD = "DIVD";
	parameter PLL_LOCK_MODE = 0;
	parameter PLL_LOCK_DELAY = 200;
	parameter STDBY_ENABLE = "DISABLED";
	parameter REFIN_RESET = "DISABLED";
	parameter SYNC_ENABLE = "DISABLED";
	parameter INT_LOCK_STICKY = "ENABLED";
	parameter DPHASE_SOURCE = "DISABLED";
	parameter PLLRST_ENA = "DISABLED";
	parameter INTFB_WAKE = "DISABLED";
	parameter LOCK_CYCLES = 16;

	real t_last = 0.0;
	real t_ref = 0.0;
	real half = 0.0;
	real f_pfd, f_vco, f_out;
	integer n_ref = 0;
	reg clk_out = 1'b0;
	reg locked = 1'b0;

	initial begin
		if (FEEDBK_PATH != "CLKOP" || CLKOP_ENABLE != "ENABLED") begin
			$display("EHXPLLL model: only FEEDBK_PATH CLKOP with CLKOP enabled is modelled");
			$finish;
		end
	end

	always @(posedge CLKI) begin
		if (n_ref > 0) begin
			t_ref = $realtime - t_last;
			f_pfd = 1000.0 / t_ref / CLKI_DIV;                    // MHz (time unit: ns)
			f_out = f_pfd * CLKFB_DIV;
			f_vco = f_out * CLKOP_DIV;
			if (f_pfd < 3.125 || f_pfd > 400.0 || f_vco < 400.0 || f_vco > 800.0 ||
			    f_out < 3.125 || f_out > 400.0) begin
				$display("EHXPLLL model: out of range: PFD %f MHz, VCO %f MHz, CLKOP %f MHz",
				         f_pfd, f_vco, f_out);
				$finish;
			end
			half = 500.0 / f_out;
		end
		t_last = $realtime;
		n_ref = n_ref + 1;
		locked <= !RST && n_ref > LOCK_CYCLES;
	end

	always begin
		if (half == 0.0 || RST)
			@(posedge CLKI);
		else
			#(half) clk_out = ~clk_out;
	end

	assign CLKOP = clk_out;
	assign LOCK = locked;
	assign {CLKOS, CLKOS2, CLKOS3, INTLOCK, CLKINTFB} = 5'b0;
	assign REFCLK = CLKI;
endmodule
