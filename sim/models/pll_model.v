// The clock of a PLL model (sb_pll40_pad.v, ecp5_prims.v wrap it with their primitive's
// ports and parameters): it measures the reference period at REF and makes CLK at
//     f_PFD = f_REF / REF_DIV,   f_VCO = f_PFD * VCO_MUL,   f_CLK = f_VCO / OUT_DIV
// with LOCK high after LOCK_CYCLES reference cycles (and low while RST). Frequencies outside
// the data sheet's ranges (MHz) stop the simulation with a message naming the primitive: a
// wrong divider setting fails in simulation, not on a board. Needs a simulator with timing
// (Verilator --timing, Icarus).
`timescale 1ns / 1ps
module deconvsr_pll_model (input REF, input RST, output CLK, output LOCK);
	parameter NAME = "PLL";
	parameter integer REF_DIV = 1;
	parameter integer VCO_MUL = 1;
	parameter integer OUT_DIV = 1;
	parameter real PFD_MIN = 0.0;
	parameter real PFD_MAX = 1000.0;
	parameter real VCO_MIN = 0.0;
	parameter real VCO_MAX = 10000.0;
	parameter real OUT_MIN = 0.0;
	parameter real OUT_MAX = 1000.0;
	parameter integer LOCK_CYCLES = 16;

	real t_last = 0.0;
	real t_ref = 0.0;
	real half = 0.0;
	real f_pfd, f_vco, f_out;
	integer n_ref = 0;
	reg clk_out = 1'b0;
	reg locked = 1'b0;

	always @(posedge REF) begin
		if (n_ref > 0) begin
			t_ref = $realtime - t_last;
			f_pfd = 1000.0 / t_ref / REF_DIV;                     // MHz (time unit: ns)
			f_vco = f_pfd * VCO_MUL;
			f_out = f_vco / OUT_DIV;
			if (f_pfd < PFD_MIN || f_pfd > PFD_MAX || f_vco < VCO_MIN || f_vco > VCO_MAX ||
			    f_out < OUT_MIN || f_out > OUT_MAX) begin
				$display("%s model: out of range: PFD %f MHz, VCO %f MHz, out %f MHz",
				         NAME, f_pfd, f_vco, f_out);
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
			@(posedge REF);
		else
			#(half) clk_out = ~clk_out;
	end

	assign CLK = clk_out;
	assign LOCK = locked;
endmodule
